package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// IDMap is what -o uid=, gid= and umask= make the mirror show: every entry
// owned by UID and GID, its permission bits less Umask (symlinks, whose
// bits mean nothing, keep theirs). It changes what a stat through the
// mirror shows, and nothing on SOURCE.
//
// What a shown owner grants: nothing beyond SOURCE's own checks. With
// allow_other the kernel checks access (default_permissions) against what
// the mirror shows, so on its own it would let the shown owner into root's
// 0700 folder. So under a mapping, a caller who is not root is checked by
// SOURCE itself at every step (see mapped): each lookup of a name and each
// listing of a folder is made with her credentials, like every open,
// change and removal already is (creds.go), and the kernel keeps no entry
// (entry timeout 0), so every path she walks is looked up again, name by
// name, as her. A mapping may thus show more than SOURCE grants; it never
// lets anyone do more. It can let them do less: the kernel still refuses
// what the shown owner, group and mode refuse (umask=077 shuts others out).
//
// Ownership changes: a mapped owner or group is fixed in the view, so a
// chown (uid= set) or chgrp (gid= set) through the mirror is refused with
// EPERM rather than change SOURCE where the view shows no change; chmod
// reaches SOURCE as the caller (SOURCE's owner alone may make it), and the
// mode it sets is shown less Umask. Files made through the mirror are
// owned on SOURCE as without a mapping: by their maker.
type IDMap struct {
	UID, GID uint32
	Umask    uint32
	SetUID   bool // UID is shown
	SetGID   bool // GID is shown
	SetUmask bool // Umask is applied
}

// Active says whether m changes anything.
func (m IDMap) Active() bool { return m.SetUID || m.SetGID || m.SetUmask }

// showAttr rewrites a as the mapping shows it.
func (m IDMap) showAttr(a *fuse.Attr) {
	if m.SetUID {
		a.Uid = m.UID
	}
	if m.SetGID {
		a.Gid = m.GID
	}
	a.Mode = m.mode(a.Mode)
}

// showStatx is showAttr for a statx reply.
func (m IDMap) showStatx(s *fuse.Statx) {
	if m.SetUID {
		s.Uid = m.UID
	}
	if m.SetGID {
		s.Gid = m.GID
	}
	s.Mode = uint16(m.mode(uint32(s.Mode)))
}

func (m IDMap) mode(mode uint32) uint32 {
	if !m.SetUmask || mode&syscall.S_IFMT == syscall.S_IFLNK {
		return mode
	}
	return mode &^ (m.Umask & 0o777)
}

// chownErr refuses a change of a mapped owner or group (see IDMap).
func (m IDMap) chownErr(in *fuse.SetAttrIn) syscall.Errno {
	if m.SetUID && in.Valid&fuse.FATTR_UID != 0 || m.SetGID && in.Valid&fuse.FATTR_GID != 0 {
		return syscall.EPERM
	}
	return 0
}

// mapped says whether ctx's request must be checked by SOURCE with the
// caller's credentials where, without a mapping, the kernel's check of
// the true attributes suffices (a lookup, a listing): a mapping is active
// and the request is carried out as the caller (creds.go).
func (m *shared) mapped(ctx context.Context) bool {
	return m.ids.Active() && m.switches(ctx)
}

// asMapped runs fn as ctx's caller when mapped, else as the daemon.
func (m *shared) asMapped(ctx context.Context, fn func() syscall.Errno) syscall.Errno {
	if m.mapped(ctx) {
		return m.asCaller(ctx, fn)
	}
	return fn()
}

func (m *shared) showEntry(out *fuse.EntryOut) {
	if m.ids.Active() {
		m.ids.showAttr(&out.Attr)
	}
}

func (m *shared) showAttrOut(out *fuse.AttrOut) {
	if m.ids.Active() {
		m.ids.showAttr(&out.Attr)
	}
}

func (m *shared) showStatxOut(out *fuse.StatxOut) {
	if m.ids.Active() {
		m.ids.showStatx(&out.Statx)
	}
}
