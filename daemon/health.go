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
// count of requests waiting on the connection is read from fusectl, and
// the mirror's count of requests answered (fs.Stats). Requests wait under
// any steady load, so waiting alone says nothing: a connection is reported
// as not answering when, at healthStuck checks in a row, requests waited
// and none was answered since the check before. A change of state is
// logged.
const (
	healthInterval = 5 * time.Second
	healthStuck    = 3
)

type health struct {
	busy     int    // checks in a row that found requests waiting and none answered
	answered uint64 // requests answered at the last check
	failing  bool
}

// check reads the waiting counter of m's connection and the count of
// requests m answered, and logs a change. Without the count (the
// collector is off), requests waiting at each check count as stuck.
func (h *health) check(m *fs.Mirror, log *slog.Logger) {
	n, err := m.Waiting()
	if err != nil {
		log.Debug("health: fusectl", "err", err)
		return
	}
	answered := h.answered
	if s := m.Stats(); s != nil {
		answered = s.Answered()
	}
	h.observe(n, answered, log, m.Entry().Mountpoint)
}

// observe is the state machine: n requests wait now, answered were
// answered since the mount.
func (h *health) observe(n int, answered uint64, log *slog.Logger, mnt string) {
	progressed := answered != h.answered
	h.answered = answered
	if n == 0 || progressed {
		h.busy = 0
	} else {
		h.busy++
	}
	switch stuck := h.busy >= healthStuck; {
	case stuck && !h.failing:
		h.failing = true
		log.Warn("health: requests wait on the mount and none is answered", "mountpoint", mnt, "waiting", n)
	case !stuck && h.failing:
		h.failing = false
		log.Info("health: the mount answers again", "mountpoint", mnt)
	}
}
