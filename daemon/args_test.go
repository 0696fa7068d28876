package daemon

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Config
	}{
		{"positionals only", []string{"src", "mnt"},
			Config{Source: "src", Mountpoint: "mnt"}},
		{"options after positionals, as mount.fuse3 passes them", []string{"src", "mnt", "-o", "ro,allow_other,fsname=data"},
			Config{Source: "src", Mountpoint: "mnt", ReadOnly: true, AllowOther: true, FsName: "data"}},
		{"attached values", []string{"-oro", "--pidfile=/p", "--log=/l", "src", "mnt"},
			Config{Source: "src", Mountpoint: "mnt", ReadOnly: true, Pidfile: "/p", Log: "/l"}},
		{"separate values", []string{"--pidfile", "/p", "src", "--log", "/l", "mnt"},
			Config{Source: "src", Mountpoint: "mnt", Pidfile: "/p", Log: "/l"}},
		{"-o aliases of the flags", []string{"src", "mnt", "-o", "pidfile=/p,log=/l"},
			Config{Source: "src", Mountpoint: "mnt", Pidfile: "/p", Log: "/l"}},
		{"foreground", []string{"-f", "src", "mnt"},
			Config{Source: "src", Mountpoint: "mnt", Foreground: true}},
		{"debug", []string{"src", "mnt", "-o", "debug"},
			Config{Source: "src", Mountpoint: "mnt", Debug: true}},
		{"fstab noise is accepted", []string{"src", "mnt", "-o", "rw,defaults,nofail,_netdev,noauto,user,x-systemd.automount,comment=x"},
			Config{Source: "src", Mountpoint: "mnt"}},
		{"the last of ro and rw wins", []string{"src", "mnt", "-o", "rw,ro", "-o", "ro,rw"},
			Config{Source: "src", Mountpoint: "mnt"}},
		{"kernel flags pass through", []string{"src", "mnt", "-o", "nosuid,nodev,noexec"},
			Config{Source: "src", Mountpoint: "mnt", KernelFlags: []string{"nosuid", "nodev", "noexec"}}},
		{"timeouts", []string{"--ready-timeout", "5s", "--unmount-timeout=1m", "src", "mnt"},
			Config{Source: "src", Mountpoint: "mnt", ReadyTimeout: 5 * time.Second, UnmountTimeout: time.Minute}},
		{"takeover", []string{"src", "mnt", "--takeover", "--allow-interruption", "--drain-timeout=5m"},
			Config{Source: "src", Mountpoint: "mnt", Takeover: true, AllowInterruption: true, DrainTimeout: 5 * time.Minute}},
		{"-- ends options", []string{"--", "-src", "mnt"},
			Config{Source: "-src", Mountpoint: "mnt"}},
		{"policy file", []string{"src", "mnt", "--config", "p.toml"},
			Config{Source: "src", Mountpoint: "mnt", ConfigFile: "p.toml"}},
		{"policy file as a mount option", []string{"src", "mnt", "-o", "ro,config=/etc/mirrorfs/x.toml"},
			Config{Source: "src", Mountpoint: "mnt", ReadOnly: true, ConfigFile: "/etc/mirrorfs/x.toml"}},
		{"check-config needs no positionals", []string{"--check-config", "p.toml"}, Config{CheckConfig: "p.toml"}},
		{"help needs no positionals", []string{"--help"}, Config{Help: true}},
		{"version", []string{"-V"}, Config{Version: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.args)
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			want := tt.want
			if want.ReadyTimeout == 0 {
				want.ReadyTimeout = 30 * time.Second
			}
			if want.DrainTimeout == 0 {
				want.DrainTimeout = DefaultDrainTimeout
			}
			if want.UnmountTimeout == 0 {
				want.UnmountTimeout = 10 * time.Second
			}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tt.args, *got, want)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "expected SOURCE and MOUNTPOINT, got 0 argument(s)"},
		{[]string{"a"}, "expected SOURCE and MOUNTPOINT, got 1 argument(s)"},
		{[]string{"a", "b", "c"}, "expected SOURCE and MOUNTPOINT, got 3 argument(s)"},
		{[]string{"--bogus", "a", "b"}, `unknown option "--bogus"`},
		{[]string{"a", "b", "-o", "ro,bogus"}, `unknown mount option "bogus"`},
		{[]string{"a", "b", "-o", "fsname="}, `unknown mount option "fsname="`},
		{[]string{"a", "b", "-o"}, "option -o needs a value"},
		{[]string{"--check-config", "", "a", "b"}, "option --check-config needs a value"},
		{[]string{"--pidfile=", "a", "b"}, "option --pidfile needs a value"},
		{[]string{"a", "b", "-o", "config="}, `unknown mount option "config="`},
		{[]string{"--ready-timeout", "soon", "a", "b"}, `--ready-timeout: "soon" is not a positive duration (e.g. 30s)`},
		{[]string{"--unmount-timeout=-1s", "a", "b"}, `--unmount-timeout: "-1s" is not a positive duration (e.g. 30s)`},
		{[]string{"--drain-timeout", "soon", "a", "b"}, `--drain-timeout: "soon" is not a positive duration (e.g. 30s)`},
		{[]string{"--allow-interruption", "a", "b"}, `--allow-interruption goes with --takeover`},
	}
	for _, tt := range tests {
		_, err := ParseArgs(tt.args)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseArgs(%q) = %v, want %q", tt.args, err, tt.want)
		}
		if !errors.Is(err, ErrUsage) || exitCode(err) != ExitUsage {
			t.Errorf("ParseArgs(%q): error %v is not a usage error (exit %d)", tt.args, err, exitCode(err))
		}
	}
}

func TestBackground(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"a", "b"}, true},
		{[]string{"-f", "a", "b"}, false},
		{[]string{"-d", "a", "b"}, false},
		{[]string{"a", "b", "-o", "ro,debug"}, false},
	} {
		c, err := ParseArgs(tt.args)
		if err != nil {
			t.Fatal(err)
		}
		if c.Background() != tt.want {
			t.Errorf("Background(%q) = %v, want %v", tt.args, c.Background(), tt.want)
		}
	}
}

// TestParseArgsEmptyConfig: --config= (a unit's unset ${CONFIG}) means the
// default policy, not a usage error.
func TestParseArgsEmptyConfig(t *testing.T) {
	for _, args := range [][]string{{"--config=", "a", "b"}, {"a", "b", "--config", ""}} {
		c, err := ParseArgs(args)
		if err != nil || c.ConfigFile != "" {
			t.Errorf("ParseArgs(%q) = %+v, %v; want no policy file", args, c, err)
		}
	}
}

// TestParseArgsDropsHelperDefaults: the dev and suid mount.fuse3 appends
// for root are dropped; those the operator wrote are kept.
func TestParseArgsDropsHelperDefaults(t *testing.T) {
	for list, want := range map[string]string{
		"ro,dev,suid":          "",
		"nodev,suid":           "nodev",
		"nosuid,dev":           "nosuid",
		"nosuid,nodev":         "nosuid,nodev",
		"suid,ro,dev,suid":     "suid",
		"suid,dev,dev,suid":    "suid,dev",
		"allow_other,suid":     "suid", // not mount.fuse3's: it would have appended dev too
		"dev,suid,allow_other": "dev,suid",
	} {
		c, err := ParseArgs([]string{"a", "b", "-o", list})
		if err != nil || strings.Join(c.KernelFlags, ",") != want {
			t.Errorf("-o %s: kernel flags %v, %v; want %q", list, c.KernelFlags, err, want)
		}
	}
	c, _ := ParseArgs([]string{"-o", "dev,suid", "a", "b"}) // not the helper's form
	if strings.Join(c.KernelFlags, ",") != "dev,suid" {
		t.Errorf("a direct -o dev,suid was dropped: %v", c.KernelFlags)
	}
}
