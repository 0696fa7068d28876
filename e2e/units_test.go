package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unit is what a systemd unit of scripts/systemd says about how to run it.
type unit struct {
	typ       string
	env       []string // Environment= assignments, in order
	envFiles  []string // EnvironmentFile= paths; a leading "-" marks an optional one
	execStart string
}

// readUnit reads scripts/systemd/name, instance "t", with its paths moved
// into dir (etc/, run/, log/) and the binary under test as mirrorfs.
func readUnit(t *testing.T, name, dir string) unit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "scripts", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("/usr/local/bin/mirrorfs", bin, "/etc/default/mirrorfs", dir+"/default.env",
		"/etc/mirrorfs", dir+"/etc", "/run/mirrorfs", dir+"/run", "/var/log/mirrorfs", dir+"/log",
		"%i", "t", "%I", "t").Replace(string(b))
	var u unit
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), "=")
		switch key {
		case "Type":
			u.typ = value
		case "Environment":
			u.env = append(u.env, strings.Fields(value)...)
		case "EnvironmentFile":
			u.envFiles = append(u.envFiles, value)
		case "ExecStart":
			u.execStart = value
		}
	}
	return u
}

// environment is what systemd gives the service: Environment=, then each
// EnvironmentFile= over it.
func (u unit) environment(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, a := range u.env {
		k, v, _ := strings.Cut(a, "=")
		env[k] = v
	}
	for _, f := range u.envFiles {
		optional := strings.HasPrefix(f, "-")
		b, err := os.ReadFile(strings.TrimPrefix(f, "-"))
		if err != nil && optional {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range parseEnvFile(t, string(b)) {
			env[k] = v
		}
	}
	return env
}

// parseEnvFile reads an environment file by systemd's rules (env-file.c),
// for one-line values: "#" or ";" first makes a comment, blanks around key
// and value go, '...' is literal, "..." unescapes \" \\ \` \$, \X outside
// quotes is X, and what follows a closing quote is joined to the value.
func parseEnvFile(t *testing.T, text string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimLeft(line, " \t")
		key, rest, ok := strings.Cut(line, "=")
		if line == "" || strings.ContainsAny(line[:1], "#;") || !ok {
			continue
		}
		var v strings.Builder
		trail := -1 // where trailing blanks of an unquoted part begin
		for i := 0; i < len(rest); i++ {
			switch c := rest[i]; {
			case c == '\'' || c == '"':
				end := strings.IndexByte(rest[i+1:], c)
				if end < 0 {
					t.Fatalf("parseEnvFile: unterminated quote in %q", line)
				}
				part := rest[i+1 : i+1+end]
				if c == '"' {
					part = regexp.MustCompile("\\\\([\"\\\\`$])").ReplaceAllString(part, "$1")
				}
				v.WriteString(part)
				i += end + 1
				for i+1 < len(rest) && (rest[i+1] == ' ' || rest[i+1] == '\t') {
					i++ // blanks after a closing quote are dropped
				}
				trail = -1
			case c == '\\' && i+1 < len(rest):
				i++
				v.WriteByte(rest[i])
				trail = -1
			case c == ' ' || c == '\t':
				if v.Len() == 0 {
					continue
				}
				if trail < 0 {
					trail = v.Len()
				}
				v.WriteByte(c)
			default:
				v.WriteByte(c)
				trail = -1
			}
		}
		value := v.String()
		if trail >= 0 {
			value = value[:trail]
		}
		env[strings.TrimRight(key, " \t")] = value
	}
	return env
}

// systemdReads checks, with systemd's own parser, that it reads key in file
// as want: ConditionOSRelease= reads /etc/os-release with the code that
// reads EnvironmentFile=, and a private mount namespace puts file there.
func systemdReads(t *testing.T, file, key, want string) {
	t.Helper()
	cond := fmt.Sprintf("ConditionOSRelease=%q", key+"="+want)
	out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /etc/os-release && exec systemd-analyze condition "$2"`, "sh", file, cond).CombinedOutput()
	if err != nil {
		t.Errorf("systemd does not read %s as %q in %s: %v\n%s", key, want, file, err, out)
	}
}

// command expands ExecStart as systemd does: ${NAME} is replaced by the
// value, within a word; a word that is $NAME alone becomes the value's
// blank-separated words (none if it is empty).
func (u unit) command(env map[string]string) []string {
	var argv []string
	braced := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	for _, w := range strings.Fields(u.execStart) {
		if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		argv = append(argv, braced.ReplaceAllStringFunc(w, func(m string) string { return env[m[2:len(m)-1]] }))
	}
	return argv
}

// startUnit runs the unit's ExecStart as systemd would and returns the
// daemon's pid once it is ready: Type=notify in the foreground with a
// NOTIFY_SOCKET, Type=forking until the first process exits 0.
func startUnit(t *testing.T, e *env, u unit, argv []string) int {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if u.typ == "forking" {
		if err := cmd.Run(); err != nil {
			t.Fatalf("%q: %v\n%s", argv, err, out.String())
		}
		pid := e.pid()
		e.pids = append(e.pids, pid)
		return pid
	}
	sock := filepath.Join(e.dir, "notify")
	os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pids = append(e.pids, cmd.Process.Pid)
	go cmd.Wait()
	conn.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 4096)
	if n, err := conn.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1") {
		t.Fatalf("%q: no READY=1 (%q, %v)\n%s", argv, buf[:n], err, out.String())
	}
	return cmd.Process.Pid
}

// TestSystemdUnitsRun runs each unit's ExecStart with the settings file
// mirrorfs-ctl reads, expanded as systemd expands it (the file's values
// checked against systemd's own reading): every setting is honoured, and
// the defaults apply when the optional ones are left out.
func TestSystemdUnitsRun(t *testing.T) {
	for _, name := range []string{"mirrorfs@.service", "mirrorfs-forking@.service"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			dir := e.dir
			for _, d := range []string{"etc", "run", "log"} {
				os.MkdirAll(filepath.Join(dir, d), 0o755)
			}
			u := readUnit(t, name, dir)
			e.pidf, e.logf = filepath.Join(dir, "run", "t.pid"), filepath.Join(dir, "log", "t.log")
			src := filepath.Join(dir, "my data")
			os.Mkdir(src, 0o755)
			os.WriteFile(filepath.Join(src, "f"), []byte("unit"), 0o644)
			os.WriteFile(filepath.Join(src, "secret"), nil, 0o644)
			policy := e.writePolicy("hide = ['secret']\n")
			settings := filepath.Join(dir, "etc", "t.env")
			os.WriteFile(filepath.Join(dir, "default.env"), []byte("# shared\nUNMOUNT_TIMEOUT=7\n"), 0o644)
			os.WriteFile(settings, []byte(fmt.Sprintf("# data\n SOURCE = \"%s\"\nMOUNTPOINT=%s\nCONFIG='%s'\n"+
				"; the kernel's read-only flag\nOPTIONS=\"-o ro\"\nUNMOUNT_TIMEOUT=3\n", src, e.mnt, policy)), 0o644)
			env := u.environment(t)
			for key, want := range map[string]string{"SOURCE": src, "MOUNTPOINT": e.mnt, "CONFIG": policy,
				"OPTIONS": "-o ro", "UNMOUNT_TIMEOUT": "3"} {
				if env[key] != want {
					t.Errorf("settings: %s=%q, want %q", key, env[key], want)
				}
				systemdReads(t, settings, key, want)
			}
			argv := u.command(env)
			pid := startUnit(t, e, u, argv)
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if !strings.Contains(string(cmdline), "--unmount-timeout\x003s") {
				t.Errorf("UNMOUNT_TIMEOUT not passed: %q", cmdline)
			}
			if b, _ := os.ReadFile(filepath.Join(e.mnt, "f")); string(b) != "unit" {
				t.Errorf("SOURCE: mirror shows %q", b)
			}
			if exists(filepath.Join(e.mnt, "secret")) {
				t.Error("CONFIG was not applied")
			}
			if os.WriteFile(filepath.Join(e.mnt, "w"), nil, 0o644) == nil {
				t.Error("OPTIONS was not applied")
			}
			stopUnit(t, e, u, pid)

			// Only what is required: the defaults of the others apply.
			os.WriteFile(settings, []byte(fmt.Sprintf("SOURCE=%s\nMOUNTPOINT=%s\n", src, e.mnt)), 0o644)
			os.Remove(filepath.Join(dir, "default.env"))
			pid = startUnit(t, e, u, u.command(u.environment(t)))
			cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if !strings.Contains(string(cmdline), "--unmount-timeout\x0010s") || !exists(filepath.Join(e.mnt, "secret")) {
				t.Errorf("defaults: %q, secret shown: %v", cmdline, exists(filepath.Join(e.mnt, "secret")))
			}
			stopUnit(t, e, u, pid)
		})
	}
}

// stopUnit stops the daemon as systemd does (SIGTERM) and waits for it to
// end: a forking one was adopted by this process, which reaps it.
func stopUnit(t *testing.T, e *env, u unit, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGTERM)
	if u.typ == "forking" {
		waitExit(t, pid)
	}
	eventually(t, "the unit's daemon to stop", func() bool { return !mounted(e.mnt) && syscall.Kill(pid, 0) != nil })
}
