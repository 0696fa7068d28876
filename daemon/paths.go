package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// resolve makes the command line's paths absolute against dir (the directory
// the user ran the command in) and fills in the default pidfile and log.
func (c *Config) resolve(dir string, env func(string) string) error {
	for _, p := range []*string{&c.Source, &c.Mountpoint, &c.Pidfile, &c.Log, &c.ConfigFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
		if *p != "" {
			*p = filepath.Clean(*p)
		}
	}
	runDir, logDir, err := defaultDirs(os.Geteuid(), env)
	name := escapePath(c.Mountpoint)
	if c.Pidfile == "" {
		if err != nil {
			return fmt.Errorf("%w; pass --pidfile", err)
		}
		c.Pidfile = filepath.Join(runDir, name+".pid")
	}
	if c.Log == "" {
		if err != nil {
			return fmt.Errorf("%w; pass --log", err)
		}
		c.Log = filepath.Join(logDir, name+".log")
	}
	return nil
}

// defaultDirs are where pidfiles and logs live unless told otherwise.
func defaultDirs(euid int, env func(string) string) (run, log string, err error) {
	if euid == 0 {
		return "/run/mirrorfs", "/var/log/mirrorfs", nil
	}
	runtime := env("XDG_RUNTIME_DIR")
	if runtime == "" {
		return "", "", fmt.Errorf("XDG_RUNTIME_DIR is not set, so there is no default pidfile location")
	}
	state := env("XDG_STATE_HOME")
	if state == "" {
		state = filepath.Join(env("HOME"), ".local", "state")
	}
	return filepath.Join(runtime, "mirrorfs"), filepath.Join(state, "mirrorfs"), nil
}

// escapePath names a mountpoint the way systemd-escape --path does, so
// /mnt/my data becomes mnt-my\x20data (and matches mirrorfs@mnt-my\x20data).
func escapePath(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		ch := p[i]
		switch {
		case ch == '/':
			b.WriteByte('-')
		case ch == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, ch)
		case ch == '_' || ch == '.' || ch == ':' || isAlnum(ch):
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, `\x%02x`, ch)
		}
	}
	return b.String()
}

func isAlnum(ch byte) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
}
