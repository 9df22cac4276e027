//go:build !linux

package procattr

import "syscall"

func attrs(group bool) *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: group} }
