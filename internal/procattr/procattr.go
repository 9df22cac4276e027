// Package procattr gives the processes roomlb starts (redis-server, Node
// monoliths, the processes of roomlb bench and chaos) their attributes.
// Killing them when roomlb itself dies works on Linux only; elsewhere a
// roomlb that dies hard leaves its children running.
package procattr

import "syscall"

// Child returns the attributes of a development child (roomlb dev, the
// tests' monoliths): a process group of its own, so that a terminal's
// Ctrl-C reaches roomlb alone and roomlb stops its children in order; and
// a kill when roomlb dies.
func Child() *syscall.SysProcAttr { return attrs(true) }

// Tied returns the attributes of a child that stays in roomlb's process
// group and is killed when roomlb dies.
func Tied() *syscall.SysProcAttr { return attrs(false) }
