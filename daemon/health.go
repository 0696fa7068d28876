package daemon

import (
	"log/slog"
	"time"

	"mirrorfs/fs"
)

// Health comes from what needs no request to the mount (the daemon never
// sends one to its own mount: a thread of ours waiting on it could keep the
// process alive once its server threads are gone). The mount table is
// watched continuously (mounts.Gone); every healthInterval the kernel's
// count of requests waiting on the connection is read from fusectl. A
// connection where requests have waited at each of healthStuck checks in a
// row is reported as not answering, and a change of state is logged.
const (
	healthInterval = 5 * time.Second
	healthStuck    = 3
)

type health struct {
	busy    int // checks in a row that found requests waiting
	failing bool
}

// check reads the waiting counter of m's connection and logs a change.
func (h *health) check(m *fs.Mirror, log *slog.Logger) {
	n, err := m.Waiting()
	if err != nil {
		log.Debug("health: fusectl", "err", err)
		return
	}
	h.observe(n, log, m.Entry().Mountpoint)
}

// observe is the state machine: n requests wait now.
func (h *health) observe(n int, log *slog.Logger, mnt string) {
	if n == 0 {
		h.busy = 0
	} else {
		h.busy++
	}
	switch stuck := h.busy >= healthStuck; {
	case stuck && !h.failing:
		h.failing = true
		log.Warn("health: requests wait on the mount and none ends", "mountpoint", mnt, "waiting", n)
	case !stuck && h.failing && n == 0:
		h.failing = false
		log.Info("health: the mount answers again", "mountpoint", mnt)
	}
}
