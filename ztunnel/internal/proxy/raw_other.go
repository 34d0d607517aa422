//go:build !linux

package proxy

import "syscall"

// rawReader is Linux-only; elsewhere copies use the portable path.
func rawReader(syscall.RawConn) func() (*[]byte, int, error) { return nil }
