//go:build !linux

package netns

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
)

var errUnsupported = errors.New("netns: network namespaces exist only on Linux")

// KeyOf is not supported on this platform.
func KeyOf(*os.File) (Key, error) { return Key{}, errUnsupported }

// Open is not supported on this platform.
func Open(string) (*os.File, error) { return nil, errUnsupported }

// OpenInRootOf is not supported on this platform.
func OpenInRootOf(int, string) (*os.File, error) { return nil, errUnsupported }

// Addrs is not supported on this platform.
func Addrs(*os.File) ([]netip.Addr, error) { return nil, errUnsupported }

// DefaultGateways is not supported on this platform.
func DefaultGateways(*os.File) ([]netip.Addr, error) { return nil, errUnsupported }

// Scanner finds pods' network namespaces; only functional on Linux.
type Scanner struct{}

// NewScanner returns a Scanner whose methods fail on this platform.
func NewScanner(*slog.Logger) *Scanner { return &Scanner{} }

// Find is not supported on this platform.
func (*Scanner) Find([]netip.Addr) (*os.File, error) { return nil, errUnsupported }

// Gateways is not supported on this platform.
func (*Scanner) Gateways(*os.File) ([]netip.Addr, error) { return nil, errUnsupported }

// Scans is always 0 on this platform.
func (*Scanner) Scans() int { return 0 }
