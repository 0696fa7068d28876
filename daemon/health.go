package daemon

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Health checks: the mount table is watched continuously (watchMount); every
// healthInterval the daemon also asks its own mount to answer a statfs,
// which goes through the kernel connection to the serving loop and back. A
// change of state is logged.
const (
	healthInterval = 5 * time.Second
	healthTimeout  = 2 * time.Second
)

type health struct {
	mnt      string
	log      *slog.Logger
	last     time.Time
	inFlight atomic.Bool
	failing  atomic.Bool
}

// check starts a probe when one is due and none is in flight.
func (h *health) check(now time.Time) {
	if now.Sub(h.last) < healthInterval || !h.inFlight.CompareAndSwap(false, true) {
		return
	}
	h.last = now
	go func() {
		defer h.inFlight.Store(false)
		err := probeWithin(h.mnt, healthTimeout)
		switch {
		case err != nil && !h.failing.Swap(true):
			h.log.Warn("health: the mount does not answer", "mountpoint", h.mnt, "err", err)
		case err == nil && h.failing.Swap(false):
			h.log.Info("health: the mount answers again", "mountpoint", h.mnt)
		}
	}()
}
