// Package netns finds and opens the network namespaces of pods on the node:
// by the pod's IP addresses (a scan of /proc/<pid>/ns/net, for pods that
// were running before the node agent captured them), or by the path a CNI
// plugin was given (opened through the plugin's own root). It also reads a
// netns's default gateways, where kubelet probes come from on a bridge CNI.
//
// Every function that returns an *os.File returns an open descriptor of an
// nsfs inode of type CLONE_NEWNET; the caller owns it.
package netns

import (
	"errors"
	"fmt"
	"os"
)

// Key identifies a network namespace: the device and inode of its nsfs
// file. Two descriptors are the same namespace exactly when their keys are
// equal (while the namespace lives).
type Key struct {
	Dev, Ino uint64
}

// String formats k as "dev:ino" (ino is what `ls -Li /proc/<pid>/ns/net`
// and `lsns -t net` print).
func (k Key) String() string { return fmt.Sprintf("%d:%d", k.Dev, k.Ino) }

// ErrNotFound means no network namespace on the node has the pod's
// addresses (the pod's sandbox is not running, or runs on another node).
var ErrNotFound = errors.New("no network namespace on this node has the pod's IPs")

// ErrAmbiguous means a pod IP is assigned in more than one network
// namespace on the node, so the agent cannot tell which is the pod's.
var ErrAmbiguous = errors.New("the pod's IPs are assigned in more than one network namespace")

// FDPath is a path that names f's namespace for as long as f stays open,
// for APIs that take a path (redirect.Installer).
func FDPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }
