package socket

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Options configure a listener created by ListenInNetns. SO_REUSEPORT is
// always set: a new ztunnel binds the same ports in every pod before the old
// one drains (zero-downtime upgrade).
type Options struct {
	// Mark is the SO_MARK for the listening socket (ztunnel uses 0x539 so
	// the pod's redirection rules skip its traffic); 0 leaves it unset.
	Mark uint32
	// Transparent sets IP_TRANSPARENT / IPV6_TRANSPARENT, so the socket may
	// bind to (and accept connections for) addresses that are not local.
	Transparent bool
}

// DialOptions configure a connection created by DialInNetns.
type DialOptions struct {
	// Mark is the SO_MARK for the socket (0x539 for ztunnel); 0 leaves it
	// unset.
	Mark uint32
	// TransparentSource, when valid, is the source address of the
	// connection even though it is not local (the original client of an
	// inbound connection): the socket gets IP_TRANSPARENT / IPV6_TRANSPARENT
	// and is bound to this address, port 0. Its family must match the
	// destination's. Replies reach the socket only if the namespace routes
	// them locally (the pod's connmark + policy route).
	TransparentSource netip.Addr
}

// ListenInNetns creates a TCP listener inside the network namespace ns.
// network is "tcp", "tcp4" or "tcp6"; addr is "ip:port" or ":port" with a
// literal IP (no name lookups happen inside the namespace). The listening
// socket has SO_REUSEPORT, plus SO_MARK and IP_TRANSPARENT per opts; it
// stays in ns after the calling thread has switched back.
func ListenInNetns(ctx context.Context, ns *Netns, network, addr string, opts Options) (net.Listener, error) {
	if err := checkNetwork(network); err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("listen address %q: host must be a literal IP: %w", addr, err)
		}
	}
	lc := net.ListenConfig{Control: control(sockopts{reusePort: true, mark: opts.Mark, transparent: opts.Transparent})}
	var ln net.Listener
	err = ns.Do(func() error {
		var err error
		ln, err = lc.Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %v: %w", network, addr, ns, err)
	}
	return ln, nil
}

// DialInNetns connects to dst ("ip:port", literal IP) from a socket created
// inside the network namespace ns, with SO_MARK and a transparent source per
// opts. network is "tcp", "tcp4" or "tcp6". ctx bounds the connect.
func DialInNetns(ctx context.Context, ns *Netns, network, dst string, opts DialOptions) (*net.TCPConn, error) {
	if err := checkNetwork(network); err != nil {
		return nil, err
	}
	to, err := netip.ParseAddrPort(dst)
	if err != nil {
		return nil, fmt.Errorf("dial destination %q: want a literal ip:port: %w", dst, err)
	}
	d := net.Dialer{Control: control(sockopts{mark: opts.Mark})}
	if src := opts.TransparentSource; src.IsValid() {
		if src.Unmap().Is4() != to.Addr().Unmap().Is4() {
			return nil, fmt.Errorf("transparent source %v and destination %v are of different IP families", src, to)
		}
		d.Control = control(sockopts{mark: opts.Mark, transparent: true})
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src.Unmap(), 0))
	}
	var c net.Conn
	err = ns.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, dst)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s from %v: %w", dst, ns, err)
	}
	return c.(*net.TCPConn), nil
}

func checkNetwork(network string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return nil
	default:
		return fmt.Errorf("network %q not supported: want tcp, tcp4 or tcp6", network)
	}
}

type sockopts struct {
	reusePort   bool
	mark        uint32
	transparent bool
}

// control returns a net.ListenConfig/net.Dialer Control function setting
// the options before bind and connect. network is "tcp4" or "tcp6" there:
// the family of the socket actually created.
func control(o sockopts) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			s := int(fd)
			if o.reusePort {
				if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
					serr = errors.Join(serr, fmt.Errorf("set SO_REUSEPORT: %w", err))
				}
			}
			if o.mark != 0 {
				if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_MARK, int(o.mark)); err != nil {
					serr = errors.Join(serr, fmt.Errorf("set SO_MARK %#x: %w (needs CAP_NET_ADMIN)", o.mark, err))
				}
			}
			if o.transparent {
				var err error
				if network == "tcp6" {
					err = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				} else {
					err = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				}
				if err != nil {
					serr = errors.Join(serr, fmt.Errorf("set IP_TRANSPARENT: %w (needs CAP_NET_ADMIN)", err))
				}
			}
		})
		return errors.Join(err, serr)
	}
}
