package fs

import (
	"syscall"

	"mirrorfs/policy"
)

// The policy checks the node methods (methods.go) make before an
// operation. Each method reads the policy once and decides by that one
// value throughout (a reload between two checks would
// let each policy pass what the other refuses): read_only gives EROFS; a
// hidden name gives ENOENT where it would have to exist and EPERM where it
// would be created (so a hidden file can be neither reached nor replaced
// through the mirror); a hidden folder, or a hidden node kept from before
// a reload, gives ENOENT.
//
// What a reload promises for what was opened before it: a file or folder
// open then stays open, and its handle keeps working on its file, as after
// a chmod (reads, writes, fstat). Nothing new is given to a node the policy
// in force hides, whichever way the node is reached (a cwd, a descriptor
// reopened through /proc, a file handle): no lookup below it, no open, no
// stat by path, no new name (link), no entry made or removed in it.

// guardNew checks a name about to be created in n.
func (n *node) guardNew(p *policy.Policy, name string) syscall.Errno {
	switch {
	case p.ReadOnly:
		return syscall.EROFS
	case n.pathHidden(p):
		return syscall.ENOENT
	case n.entryHidden(p, name, true):
		return syscall.EPERM
	}
	return 0
}

// guardExisting checks an existing name in n about to be changed.
func (n *node) guardExisting(p *policy.Policy, name string) syscall.Errno {
	switch {
	case p.ReadOnly:
		return syscall.EROFS
	case n.pathHidden(p), n.entryHidden(p, name, true):
		return syscall.ENOENT
	}
	return 0
}

func (n *node) guardWrite() syscall.Errno { return writeErr(n.m.policy.Load()) }

func writeErr(p *policy.Policy) syscall.Errno {
	if p.ReadOnly {
		return syscall.EROFS
	}
	return 0
}

// guardNode checks a change to n itself, not through an open handle.
func (n *node) guardNode(p *policy.Policy) syscall.Errno {
	if errno := writeErr(p); errno != 0 {
		return errno
	}
	return n.hiddenErr(p)
}

const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

// guardIoctl refuses a command that changes the file under read_only and on
// a read-only mount (where the kernel checks it too, for the commands it
// knows, but not for all).
func (n *node) guardIoctl() syscall.Errno {
	if n.m.readOnly {
		return syscall.EROFS
	}
	return n.guardWrite()
}

// hiddenErr is ENOENT when n is hidden under p: no new access to it.
func (n *node) hiddenErr(p *policy.Policy) syscall.Errno {
	if n.pathHidden(p) {
		return syscall.ENOENT
	}
	return 0
}
