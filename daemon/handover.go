package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The old daemon's side of a takeover (takeover.go has the new one's).
// It answers on its control socket, on the main goroutine, which alone
// acts on the mount: "hello" names its mount; "switched" (the new daemon
// detached it: the new mount, slid beneath, is on top from that instant)
// drops the pidfile's lock without removing the files, and answers. A new
// daemon that hangs up after the switch, without telling, is taken for
// one that told. Then it drains:
// it serves what was opened through its mount until the last of it is
// closed (the session ends by itself then), the drain timeout, or a stop
// signal, which abort what is left (ENOTCONN to its holders).

// heldShown bounds the open files a drain's end names in the log.
const heldShown = 20

// control answers one call on the control socket; handedOver says the
// mount was handed over.
func (d *daemon) control(c ctlCall) (handedOver bool) {
	switch c.req.Op {
	case "bye":
		if d.taker != c.conn {
			return false
		}
		if d.mirror.OnTop() {
			d.taker = 0
			d.log.Info("takeover abandoned", "by", c.peer)
			return false
		}
		d.log.Warn("the new daemon detached our mount, then hung up without a word", "pid", c.peer)
		d.handOver(c.peer, DefaultDrainTimeout)
		return true
	case "hello":
		c.reply <- d.hello(c)
		return false
	case "switched":
		r := d.switched(c)
		c.reply <- r
		// An idle mount drains at once: the answer must be out before
		// this daemon may exit.
		select {
		case <-c.sent:
		case <-time.After(2 * time.Second):
		}
		return r.Error == ""
	}
	c.reply <- ctlReply{Error: fmt.Sprintf("unknown request %q", c.req.Op), Pid: os.Getpid()}
	return false
}

// hello names the mount, for the caller to slide its own beneath it.
func (d *daemon) hello(c ctlCall) ctlReply {
	r := ctlReply{Pid: os.Getpid()}
	id, ok := d.mirror.ID()
	switch {
	case d.taker != 0 && d.taker != c.conn:
		r.Error = fmt.Sprintf("another takeover (pid %d) is under way", d.takerPid)
	case c.req.Mountpoint != d.cfg.Mountpoint:
		r.Error = fmt.Sprintf("this daemon serves %s, not %s", d.cfg.Mountpoint, c.req.Mountpoint)
	case !ok:
		r.Error = "this daemon's mount was not made through the mount API"
	default:
		d.taker, d.takerPid, d.takerSince, r.Mount = c.conn, c.peer, time.Now(), id
		d.log.Info("takeover asked", "by", c.peer)
	}
	return r
}

// switched hands over to the caller, which detached our mount.
func (d *daemon) switched(c ctlCall) ctlReply {
	r := ctlReply{Pid: os.Getpid()}
	switch {
	case d.taker != c.conn:
		r.Error = "switched without hello"
	case d.mirror.OnTop():
		r.Error = "this daemon's mount is still the one on top"
	default:
		d.handOver(c.peer, c.req.DrainTimeout)
	}
	return r
}

// handOver lets go of what the successor takes (the pidfile's lock, the
// control socket, the statistics file) and records the drain; the mount
// is detached already.
func (d *daemon) handOver(successor int, limit time.Duration) {
	if limit <= 0 {
		limit = DefaultDrainTimeout
	}
	rec, err := newDrainRecord(d.pidfile, Draining{Source: d.cfg.Source, Mountpoint: d.cfg.Mountpoint, Successor: successor}, limit)
	if err != nil {
		d.log.Error("drain record", "err", err) // the drain goes on without it
	}
	d.successor, d.drainTimeout, d.drainRec = successor, limit, rec
	d.ctl.close(false)
	d.ctl = nil
	d.stats.stop()
	d.stats = nil
	d.pidfile.HandOver()
}

// takeoverLimit bounds a takeover under way: a new daemon that asked and
// then fell silent must not keep this one from seeing its mount end, nor
// hold off every later takeover.
const takeoverLimit = 2*ctlTimeout + DefaultReadyTimeout

// expireTaker ends a takeover under way for too long; handedOver says the
// silent new daemon had detached our mount, and this one now drains.
func (d *daemon) expireTaker() (handedOver bool) {
	if d.taker == 0 || time.Since(d.takerSince) < takeoverLimit {
		return false
	}
	if !d.mirror.OnTop() {
		d.log.Warn("the new daemon detached our mount, then fell silent", "pid", d.takerPid)
		d.handOver(d.takerPid, DefaultDrainTimeout)
		return true
	}
	d.log.Warn("takeover timed out; serving on", "by", d.takerPid, "after", takeoverLimit.String())
	d.taker = 0
	return false
}

// drain serves what is still open through the detached mount until it
// is all closed, the drain timeout, or a stop signal.
func (d *daemon) drain() {
	d.log = d.log.With("draining", os.Getpid())
	d.log.Info("handed over", "successor", d.successor, "drain_timeout", d.drainTimeout.String())
	timer := time.NewTimer(d.drainTimeout)
	defer timer.Stop()
	for {
		select {
		case <-d.mirror.Done():
			d.log.Info("drained")
			return
		case <-timer.C:
			d.endDrain("drain timeout; aborting")
			return
		case sig := <-d.stops:
			d.endDrain("signal " + sig.String() + "; aborting")
			return
		case <-d.hups:
			d.reopenLog()
		case c := <-d.calls: // a caller connected before the handover
			if c.reply != nil {
				c.reply <- ctlReply{Error: "this daemon was taken over and is draining", Pid: os.Getpid()}
			}
		}
	}
}

// endDrain logs what is still open, then aborts the session.
func (d *daemon) endDrain(why string) {
	paths, n := d.mirror.Held(heldShown)
	d.log.Warn(why, "held", n, "open", strings.Join(paths, " "))
	d.mirror.Abort()
}

// drainRecord is NAME.draining.PID beside the pidfile, for operators and
// mirrorfs-ctl: the draining daemon's pid on its first line (for kill),
// then what it drains, as JSON. The daemon holds a flock on it while it
// lives, as the serving one holds NAME.lock.
type drainRecord struct {
	dir  *os.File
	name string
	f    *os.File
}

// Draining is what a drain record says after its first line.
type Draining struct {
	Pid        int       `json:"pid"`
	Source     string    `json:"source"`
	Mountpoint string    `json:"mountpoint"`
	Since      time.Time `json:"since"`
	Deadline   time.Time `json:"deadline"`
	Successor  int       `json:"successor"`
}

// DrainPath is the drain record of the daemon pid that held pidfile.
func DrainPath(pidfile string, pid int) string {
	return fmt.Sprintf("%s.draining.%d", strings.TrimSuffix(pidfile, ".pid"), pid)
}

func newDrainRecord(p *Pidfile, what Draining, limit time.Duration) (*drainRecord, error) {
	dir, err := dupFile(p.Dir())
	if err != nil {
		return nil, fmt.Errorf("drain record: %w", err)
	}
	name := filepath.Base(DrainPath(p.Path(), os.Getpid()))
	// 0600: anyone who may read a file may flock it, and would keep a dead
	// daemon's record from being swept.
	f, err := openOwnFile(dir, name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err == nil {
		what.Pid, what.Since = os.Getpid(), time.Now().UTC()
		what.Deadline = what.Since.Add(limit)
		var b []byte
		b, err = json.MarshalIndent(what, "", "  ")
		if err == nil {
			_, err = fmt.Fprintf(f, "%d\n%s\n", os.Getpid(), b)
		}
	}
	rec := &drainRecord{dir: dir, name: name, f: f}
	if err != nil {
		rec.remove()
		return nil, fmt.Errorf("drain record %s: %w", name, err)
	}
	return rec, nil
}

// remove removes the record, then drops its lock.
func (r *drainRecord) remove() {
	if r == nil {
		return
	}
	unix.Unlinkat(int(r.dir.Fd()), r.name, 0)
	if r.f != nil {
		r.f.Close()
	}
	r.dir.Close()
}

// sweepDrainRecords removes the drain records of daemons killed while
// they drained: a live one holds the flock on its record, so a record
// whose flock is free is a dead daemon's.
func sweepDrainRecords(p *Pidfile) {
	dirfd, err := unix.Openat(int(p.Dir().Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	dir := os.NewFile(uintptr(dirfd), p.Dir().Name())
	defer dir.Close()
	names, _ := dir.Readdirnames(-1)
	prefix := filepath.Base(strings.TrimSuffix(p.Path(), ".pid")) + ".draining."
	for _, name := range names {
		// NAME.draining.PID and nothing else: another instance's name may
		// begin the same way (the mountpoint /mnt/a.draining.7).
		pid, found := strings.CutPrefix(name, prefix)
		if n, err := strconv.Atoi(pid); !found || err != nil || n <= 0 || strconv.Itoa(n) != pid {
			continue
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			unix.Unlinkat(dirfd, name, 0)
		}
		unix.Close(fd)
	}
}
