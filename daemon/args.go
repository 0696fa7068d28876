package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"mirrorfs/fs"
)

// Config is a parsed command line.
type Config struct {
	Source, Mountpoint string

	Foreground    bool
	Debug         bool
	ReadOnly      bool
	AllowOther    bool
	NoPassthrough bool
	Watch         string // watch=: auto, fanotify, inotify or off ("": auto)
	AutoRemount   bool   // remount after an aborted connection
	FsName        string
	KernelFlags   []string // nodev, nosuid, noexec and their opposites, passed to mount(2)
	IDs           fs.IDMap // uid=, gid=, umask=: the owner, group and mode bits a stat shows

	AllowRoot bool        // allow_root: who may enter is root alone, which a root daemon's mount already is
	LogLevel  *slog.Level // --log-level; nil: the policy file's log_level

	Pidfile, Log   string // "" means derived from the mountpoint
	ConfigFile     string // the policy file; "" means the default policy
	CheckConfig    string // --check-config FILE: validate it and exit
	ReadyTimeout   time.Duration
	UnmountTimeout time.Duration

	Takeover          bool          // --takeover: replace the daemon serving the mountpoint (takeover.go)
	AllowInterruption bool          // --allow-interruption: stop, then start, where a takeover cannot be seamless
	DrainTimeout      time.Duration // --drain-timeout: how long a daemon taken over serves what was open

	Help, Version, Man bool
	DetachDead         string // --detach-dead MNT: detach a dead mirrorfs mount at MNT and exit
}

// ErrUsage marks a malformed command line (exit code 2).
var ErrUsage = errors.New("usage error")

type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// valueOptions take a value, attached (--log=X, -oX) or in the next argument.
// The C gate in pre_runtime.c keeps the same list.
var valueOptions = map[string]func(*Config, string) error{
	"-o":                (*Config).setMountOptions,
	"--pidfile":         func(c *Config, v string) error { c.Pidfile = v; return nil },
	"--log":             func(c *Config, v string) error { c.Log = v; return nil },
	"--config":          func(c *Config, v string) error { c.ConfigFile = v; return nil }, // "": the default policy (a unit's unset ${CONFIG})
	"--check-config":    func(c *Config, v string) error { c.CheckConfig = v; return nil },
	"--ready-timeout":   durationSetter("--ready-timeout", func(c *Config) *time.Duration { return &c.ReadyTimeout }),
	"--unmount-timeout": durationSetter("--unmount-timeout", func(c *Config) *time.Duration { return &c.UnmountTimeout }),
	"--drain-timeout":   durationSetter("--drain-timeout", func(c *Config) *time.Duration { return &c.DrainTimeout }),
	"--log-level":       (*Config).setLogLevel,
	"--detach-dead":     func(c *Config, v string) error { c.DetachDead = v; return nil },
}

var flagOptions = map[string]func(*Config){
	"-f": func(c *Config) { c.Foreground = true }, "--foreground": func(c *Config) { c.Foreground = true },
	"-d": func(c *Config) { c.Debug = true },
	"-h": func(c *Config) { c.Help = true }, "--help": func(c *Config) { c.Help = true },
	"-V": func(c *Config) { c.Version = true }, "--version": func(c *Config) { c.Version = true },
	"--man":                func(c *Config) { c.Man = true },
	"--takeover":           func(c *Config) { c.Takeover = true },
	"--allow-interruption": func(c *Config) { c.AllowInterruption = true },
}

// logLevels are the levels --log-level takes: the policy file's names.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func (c *Config) setLogLevel(v string) error {
	l, ok := logLevels[v]
	if !ok {
		return usagef("--log-level: %q is not a log level (debug, info, warn, error)", v)
	}
	c.LogLevel = &l
	return nil
}

func durationSetter(name string, field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return usagef("%s: %q is not a positive duration (e.g. 30s)", name, v)
		}
		*field(c) = d
		return nil
	}
}

// Defaults of the command line's timeouts; --help shows these values.
// A drain lasts at most an hour by default: longer than ordinary
// open-use-close work (a large copy, a build), so that a takeover goes
// unnoticed, and bounded, so that the old binary and its policy stop
// serving within a known time; the log names what was still open.
const (
	DefaultReadyTimeout   = 30 * time.Second
	DefaultUnmountTimeout = 10 * time.Second
	DefaultDrainTimeout   = time.Hour
)

// ParseArgs parses the arguments after the program name. Options may come
// before, between or after the two positionals, as mount.fuse3 passes them.
func ParseArgs(args []string) (*Config, error) {
	c := &Config{ReadyTimeout: DefaultReadyTimeout, UnmountTimeout: DefaultUnmountTimeout, DrainTimeout: DefaultDrainTimeout}
	var positionals []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			positionals = append(positionals, args[i+1:]...)
			i = len(args)
		case len(arg) < 2 || arg[0] != '-':
			positionals = append(positionals, arg)
		default:
			next, err := c.option(arg, args[i+1:])
			if err != nil {
				return nil, err
			}
			i += next
		}
	}
	if c.Help || c.Version || c.Man || c.CheckConfig != "" || c.DetachDead != "" {
		return c, nil
	}
	if len(positionals) != 2 {
		return nil, usagef("expected SOURCE and MOUNTPOINT, got %d argument(s)", len(positionals))
	}
	c.Source, c.Mountpoint = positionals[0], positionals[1]
	c.dropHelperDefaults(args)
	if c.AllowInterruption && !c.Takeover {
		return nil, usagef("--allow-interruption goes with --takeover")
	}
	return c, c.checkAccessOptions()
}

// geteuid is os.Geteuid; the unit tests play a user's daemon.
var geteuid = os.Geteuid

// checkAccessOptions refuses what libfuse refuses, and allow_root where it
// would mean more than it does: the kernel knows no allow_root (libfuse
// filters each request itself); a mount lets in the user who made it, and
// a root daemon's is root's already. A user's daemon would need allow_other
// to let root in, and would then let everyone in.
func (c *Config) checkAccessOptions() error {
	switch {
	case c.AllowRoot && c.AllowOther:
		return usagef("allow_root and allow_other exclude each other (as with libfuse): allow_other lets root in too")
	case c.AllowRoot && geteuid() != 0:
		return usagef("allow_root: a mirror mounted by uid %d lets in that user alone, and the kernel has no way to add root but allow_other, which lets in everyone; run mirrorfs as root, or use allow_other", geteuid())
	case c.AllowOther && (c.IDs.SetUID || c.IDs.SetGID) && geteuid() != 0:
		// Only a root daemon carries out others' requests with their own
		// credentials (fs/creds.go); a user's daemon does all as its user,
		// so the shown owner would get that user's access to her files.
		return usagef("uid=/gid= with allow_other: a mirror mounted by uid %d acts as that user for everyone, and would give the shown owner that user's access; run mirrorfs as root", geteuid())
	}
	return nil
}

// dropHelperDefaults undoes what mount.fuse3 adds for root: it calls
// exactly "mirrorfs SRC MNT -o LIST" and appends "dev" to LIST unless nodev
// is in it, then "suid" unless nosuid is. Kept, they would make an fstab or
// mount -t mirror suid and dev where a direct start is nosuid,nodev; a
// suid or dev the operator wrote stays (mount.fuse3 keeps it, before its
// own).
func (c *Config) dropHelperDefaults(args []string) {
	if len(args) != 4 || args[2] != "-o" {
		return
	}
	list := strings.Split(args[3], ",")
	has := func(o string) bool { return slices.Contains(list, o) }
	var added []string
	if !has("nodev") {
		added = append(added, "dev")
	}
	if !has("nosuid") {
		added = append(added, "suid")
	}
	n, k := len(list), len(added)
	if k == 0 || n < k || len(c.KernelFlags) < k || !slices.Equal(list[n-k:], added) || !slices.Equal(c.KernelFlags[len(c.KernelFlags)-k:], added) {
		return
	}
	c.KernelFlags = c.KernelFlags[:len(c.KernelFlags)-k]
}

// option applies one option; it returns how many following arguments it used.
func (c *Config) option(arg string, rest []string) (int, error) {
	if set, ok := flagOptions[arg]; ok {
		set(c)
		return 0, nil
	}
	name, value, attached := splitOption(arg)
	set, ok := valueOptions[name]
	if !ok {
		return 0, usagef("unknown option %q", arg)
	}
	used := 0
	if !attached {
		if len(rest) == 0 {
			return 0, usagef("option %s needs a value", name)
		}
		value, used = rest[0], 1
	}
	if value == "" && name != "--config" {
		return 0, usagef("option %s needs a value", name)
	}
	return used, set(c, value)
}

// splitOption splits --name=value and -oVALUE.
func splitOption(arg string) (name, value string, attached bool) {
	if strings.HasPrefix(arg, "--") {
		name, value, attached = strings.Cut(arg, "=")
		return name, value, attached
	}
	if len(arg) > 2 {
		return arg[:2], arg[2:], true
	}
	return arg, "", false
}

// ignoredMountOptions are what mount(8) and fstab pass that mean nothing to
// a FUSE daemon; they are accepted so that fstab lines work.
var ignoredMountOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "users": true, "nouser": true, "owner": true, "async": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
}

var kernelMountFlags = map[string]bool{
	"nodev": true, "dev": true, "nosuid": true, "suid": true, "noexec": true, "exec": true,
}

// refusedMountOptions are familiar FUSE options that mirrorfs refuses
// rather than accept and not honour, with the reason.
var refusedMountOptions = map[string]string{
	"kernel_cache": "kernel_cache is refused: it keeps a file's cached pages across opens, and a change made on SOURCE " +
		"that no watcher reports (watch=off, an NFS source, a rewrite keeping size and mtime) would then be shown stale for good; " +
		"each open starts from fresh pages, and passthrough reads SOURCE's own page cache",
	"auto_cache": "auto_cache is refused: it keeps a file's cached pages across opens while size and mtime stay the same, " +
		"and a rewrite on SOURCE within one clock tick keeps both; each open starts from fresh pages, " +
		"and passthrough reads SOURCE's own page cache",
}

// subtypeRefused explains why subtype= takes no other value than mirrorfs.
const subtypeRefused = "the mount's type stays fuse.mirrorfs: mirrorfs-ctl, the recovery of a dead mount and the health " +
	"checks know a mirror by it (fsname=NAME names the mount in the table's source column)"

var watchModes = map[string]bool{fs.WatchAuto: true, fs.WatchFanotify: true, fs.WatchInotify: true, fs.WatchOff: true}

func (c *Config) setMountOptions(list string) error {
	for _, opt := range strings.Split(list, ",") {
		if err := c.setMountOption(opt); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) setMountOption(opt string) error {
	key, value, _ := strings.Cut(opt, "=")
	switch {
	case opt == "ro", opt == "rw":
		c.ReadOnly = opt == "ro" // the last one wins, as with mount(8)
	case opt == "allow_other":
		c.AllowOther = true
	case opt == "allow_root":
		c.AllowRoot = true
	case opt == "default_permissions", opt == "nonempty":
		// default_permissions is always on: the mirror has the kernel
		// enforce POSIX ACLs (fs/mount.go, EnableAcl), and the kernel
		// turns default_permissions on with them (fs/fuse/inode.c,
		// FUSE_POSIX_ACL). fuse3 mounts on a folder that is not empty
		// without being asked.
		// fuse3 mounts on a folder that is not empty without being asked.
	case key == "subtype" && value == "mirrorfs":
	case key == "subtype":
		return usagef("mount option %q: %s", opt, subtypeRefused)
	case refusedMountOptions[opt] != "":
		return usagef("mount option %q: %s", opt, refusedMountOptions[opt])
	case opt == "debug":
		c.Debug = true
	case opt == "nopassthrough":
		c.NoPassthrough = true
	case opt == "auto_remount":
		c.AutoRemount = true
	case key == "watch" && watchModes[value]:
		c.Watch = value
	case key == "uid", key == "gid", key == "umask":
		// What a stat shows (owner, group, mode less umask), never what
		// SOURCE holds or grants: the caller's own credentials still decide
		// each step (fs/idmap.go), and chown/chgrp of a mapped id is EPERM.
		return c.setIDOption(key, value)
	case key == "fsname" && value != "":
		c.FsName = value
	case key == "pidfile" && value != "":
		c.Pidfile = value
	case key == "log" && value != "":
		c.Log = value
	case key == "config" && value != "":
		c.ConfigFile = value
	case kernelMountFlags[opt]:
		c.KernelFlags = append(c.KernelFlags, opt)
	case ignoredMountOptions[opt] || strings.HasPrefix(opt, "x-") || key == "comment":
	default:
		return usagef("unknown mount option %q", opt)
	}
	return nil
}

// Background says whether this command line asks to detach.
func (c *Config) Background() bool {
	return !c.Foreground && !c.Debug && !c.Help && !c.Version && !c.Man && c.CheckConfig == "" && c.DetachDead == ""
}

// setIDOption sets what uid=, gid= or umask= make the mirror show
// (fs.IDMap says what that grants: nothing SOURCE does not). A user or
// group is given by number or by name; a name is resolved here, once, as
// the daemon starts, so a later change in /etc/passwd changes nothing.
func (c *Config) setIDOption(key, value string) error {
	var err error
	switch key {
	case "uid":
		c.IDs.UID, err = resolveID(value, func(name string) (string, error) {
			u, err := user.Lookup(name)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
		c.IDs.SetUID = err == nil
	case "gid":
		c.IDs.GID, err = resolveID(value, func(name string) (string, error) {
			g, err := user.LookupGroup(name)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		c.IDs.SetGID = err == nil
	case "umask":
		var m uint64
		m, err = strconv.ParseUint(value, 8, 32)
		if err == nil && m > 0o777 {
			err = errors.New("more than 777")
		}
		c.IDs.Umask, c.IDs.SetUmask = uint32(m), err == nil
	}
	if err != nil {
		return usagef("mount option %s=%s: %v", key, value, err)
	}
	return nil
}

// resolveID reads a uid or gid: a number as it is, else a name through
// lookup. (uid_t)-1 is refused: chown(2) takes it for "no change".
func resolveID(value string, lookup func(string) (string, error)) (uint32, error) {
	if value == "" {
		return 0, errors.New("empty")
	}
	id, err := strconv.ParseUint(value, 10, 32)
	if err != nil {
		s, lerr := lookup(value)
		if lerr != nil {
			return 0, lerr
		}
		if id, err = strconv.ParseUint(s, 10, 32); err != nil {
			return 0, err
		}
	}
	if uint32(id) == ^uint32(0) {
		return 0, errors.New("4294967295 is no id")
	}
	return uint32(id), nil
}
