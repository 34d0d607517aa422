//go:build !linux

package hbone

import "syscall"

// readableWaiter is not available here: copies hold their buffer while
// blocked.
func readableWaiter(syscall.RawConn) func() error { return nil }
