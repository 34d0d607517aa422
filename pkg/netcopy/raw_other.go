//go:build !linux

package netcopy

import "syscall"

// rawSupported: Pump is Linux-only.
const rawSupported = false

// rawReader is Linux-only; elsewhere copies use the portable path.
func rawReader(syscall.RawConn) func() (*[]byte, int, error) { return nil }

// readableWaiter is Linux-only: elsewhere copies hold their buffer while
// blocked.
func readableWaiter(syscall.RawConn) func() error { return nil }
