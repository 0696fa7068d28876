package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
)

// The control socket: a root daemon listens on NAME.sock beside its
// pidfile (mode 0600, in a folder only root writes to), and a new daemon
// started with --takeover talks to it there (takeover.go, handover.go).
// Each side checks the other's credentials (SO_PEERCRED): the same user,
// and on the new daemon's side the pid the old one says it has. The
// socket is named through the descriptor of the pidfile's folder, so a
// long mountpoint name never exceeds the 108 bytes of a socket address.

// ControlPath is the control socket of the daemon holding pidfile.
func ControlPath(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".sock"
}

// ctlRequest is what the new daemon asks: "hello" (who are you, which is
// your mount), then "detach" (leave the mountpoint to me and drain).
type ctlRequest struct {
	Op           string        `json:"op"`
	Mountpoint   string        `json:"mountpoint,omitempty"`
	DrainTimeout time.Duration `json:"drain_timeout,omitempty"`
}

// ctlReply is the old daemon's answer; Error is set on a refusal.
type ctlReply struct {
	Error string     `json:"error,omitempty"`
	Pid   int        `json:"pid"`
	Mount fs.MountID `json:"mount"`
}

// ctlCall is a request handed to the main goroutine, which alone acts on
// the mount; conn tells one caller from another, peer is its pid. A
// request with Op "bye" says the caller hung up.
type ctlCall struct {
	req   ctlRequest
	conn  uint64
	peer  int
	reply chan<- ctlReply
	sent  <-chan struct{} // closed once the reply is written (or could not be)
}

// controlSocket is a listening control socket.
type controlSocket struct {
	ln   *net.UnixListener
	dir  *os.File // the pidfile's folder
	name string
	ino  uint64 // the socket file we made, to remove it only if still ours
}

var connIDs atomic.Uint64

// listenControl makes the control socket in the folder open at dir and
// hands each request to calls. It makes it under a temporary name, sets
// its mode, and renames it into place: the socket's own name never has a
// wider mode, and a socket left by a killed daemon is replaced. (Bound
// under the daemon's umask 0, the temporary name is 0777 for an instant,
// in a folder only root writes to; the peer check at accept is what keeps
// other users out.)
func listenControl(dir *os.File, pidfile string, calls chan<- ctlCall, log *slog.Logger) (*controlSocket, error) {
	name := filepath.Base(ControlPath(pidfile))
	tmp := fmt.Sprintf(".%s.%d", name, os.Getpid())
	at := func(n string) string { return "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + n }
	unix.Unlinkat(int(dir.Fd()), tmp, 0)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: at(tmp), Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	var st unix.Stat_t
	err = unix.Fchmodat(int(dir.Fd()), tmp, 0o600, 0)
	if err == nil {
		err = unix.Fstatat(int(dir.Fd()), tmp, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name)
	}
	if err != nil {
		ln.Close()
		unix.Unlinkat(int(dir.Fd()), tmp, 0)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlSocket{ln: ln, dir: dir, name: name, ino: st.Ino}
	go s.accept(calls, log)
	return s, nil
}

func (s *controlSocket) accept(calls chan<- ctlCall, log *slog.Logger) {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		peer, err := peerOf(c)
		if err != nil {
			log.Warn("control socket: refused a caller", "err", err)
			c.Close()
			continue
		}
		go serveCaller(c, peer, connIDs.Add(1), calls)
	}
}

// serveCaller hands the caller's requests to calls, one at a time, and
// writes the answers back.
func serveCaller(c *net.UnixConn, peer int, id uint64, calls chan<- ctlCall) {
	defer c.Close()
	dec, enc := json.NewDecoder(c), json.NewEncoder(c)
	for {
		var req ctlRequest
		if err := dec.Decode(&req); err != nil {
			calls <- ctlCall{req: ctlRequest{Op: "bye"}, conn: id, peer: peer}
			return
		}
		reply, sent := make(chan ctlReply, 1), make(chan struct{})
		calls <- ctlCall{req: req, conn: id, peer: peer, reply: reply, sent: sent}
		c.SetWriteDeadline(time.Now().Add(time.Second))
		err := enc.Encode(<-reply)
		close(sent)
		if err != nil {
			calls <- ctlCall{req: ctlRequest{Op: "bye"}, conn: id, peer: peer}
			return
		}
	}
}

// peerOf returns the caller's pid, if it runs as our user.
func peerOf(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	if int(cred.Uid) != os.Geteuid() {
		return 0, fmt.Errorf("uid %d is not ours (%d)", cred.Uid, os.Geteuid())
	}
	return int(cred.Pid), nil
}

// close stops listening; remove also removes the socket file, if it is
// still the one we made (after a takeover it is the new daemon's).
func (s *controlSocket) close(remove bool) {
	if s == nil {
		return
	}
	s.ln.Close()
	var st unix.Stat_t
	if remove && unix.Fstatat(int(s.dir.Fd()), s.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Ino == s.ino {
		unix.Unlinkat(int(s.dir.Fd()), s.name, 0)
	}
}

// controlClient is the new daemon's side of a control socket.
type controlClient struct {
	c   *net.UnixConn
	dec *json.Decoder
	enc *json.Encoder
	pid int // the old daemon's, from SO_PEERCRED
}

// errNoControl means no daemon answers on the control socket.
var errNoControl = errors.New("no control socket answers")

// dialControl connects to the control socket of the daemon holding
// pidfile, in its folder opened and checked as the pidfile's is.
func dialControl(pidfile string) (*controlClient, error) {
	dir, err := openOwnDir(filepath.Dir(pidfile))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	path := "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + filepath.Base(ControlPath(pidfile))
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", errNoControl, ControlPath(pidfile), errors.Unwrap(err))
	}
	pid, err := peerOf(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: %w", ControlPath(pidfile), err)
	}
	return &controlClient{c: c, dec: json.NewDecoder(c), enc: json.NewEncoder(c), pid: pid}, nil
}

// call sends req and waits up to limit for the answer. An answer that
// comes from another pid than the socket's peer is refused.
func (cc *controlClient) call(req ctlRequest, limit time.Duration) (ctlReply, error) {
	cc.c.SetDeadline(time.Now().Add(limit))
	var r ctlReply
	if err := cc.enc.Encode(req); err != nil {
		return r, err
	}
	if err := cc.dec.Decode(&r); err != nil {
		return r, err
	}
	switch {
	case r.Error != "":
		return r, errors.New(r.Error)
	case r.Pid != cc.pid:
		return r, fmt.Errorf("the answer names pid %d, the socket's peer is pid %d", r.Pid, cc.pid)
	}
	return r, nil
}

func (cc *controlClient) close() { cc.c.Close() }
