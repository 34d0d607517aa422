//go:build !linux

package cniserver

import (
	"errors"
	"net"
	"os"
)

var errUnsupported = errors.New("cniserver: peer credentials and network namespaces exist only on Linux")

func peerPID(net.Conn) (int, error) { return 0, errUnsupported }

func openInRootOf(int, string) (*os.File, error) { return nil, errUnsupported }
