//go:build !linux

package redirect

import (
	"context"
	"errors"
	"log/slog"
)

// errUnsupported is returned on platforms without network namespaces.
var errUnsupported = errors.New("redirect: pod network namespaces exist only on Linux")

// Installer applies, checks and removes a Plan inside pod network
// namespaces. Only functional on Linux.
type Installer struct{}

// NewInstaller returns an Installer; on this platform every method fails.
func NewInstaller(*slog.Logger) *Installer { return &Installer{} }

// Status is what Check found in a netns.
type Status struct {
	// Problems lists what is missing or differs from the plan.
	Problems []string
}

// Installed reports whether the netns holds exactly the planned rules.
func (s Status) Installed() bool { return len(s.Problems) == 0 }

// Apply is not supported on this platform.
func (*Installer) Apply(context.Context, string, Config) error { return errUnsupported }

// Check is not supported on this platform.
func (*Installer) Check(context.Context, string, Config) (Status, error) {
	return Status{}, errUnsupported
}

// Remove is not supported on this platform.
func (*Installer) Remove(context.Context, string, Config) error { return errUnsupported }
