package daemon

import (
	"bytes"
	"io"
	"sync"
)

// heldLog keeps a start's log lines back until the pidfile is ours: the log
// file is usually the running daemon's too, and a start refused because
// that one runs ("already running") must write nothing into it. Any other
// failure, and every line once the pidfile is held, goes to the file.
type heldLog struct {
	mu  sync.Mutex
	buf *bytes.Buffer // nil once released
	w   io.Writer     // the file, or io.Discard after a refused start
}

func newHeldLog(w io.Writer) *heldLog { return &heldLog{buf: new(bytes.Buffer), w: w} }

func (h *heldLog) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.buf != nil {
		return h.buf.Write(p)
	}
	return h.w.Write(p)
}

// release writes what was held and lets later lines through, or, when keep
// is false, drops them all. Only the first call counts.
func (h *heldLog) release(keep bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.buf == nil {
		return
	}
	if keep {
		h.w.Write(h.buf.Bytes())
	} else {
		h.w = io.Discard
	}
	h.buf = nil
}
