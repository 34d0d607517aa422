package socket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from
// linux/netfilter_ipv6/ip6_tables.h; not in x/sys. (Same value as
// SO_ORIGINAL_DST, at level SOL_IPV6.)
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a connection had before the pod's
// iptables REDIRECT sent it to ztunnel (SO_ORIGINAL_DST for IPv4, including
// IPv4 connections on a dual-stack listener; IP6T_SO_ORIGINAL_DST for IPv6).
// For a tracked connection that was not NATed it returns the connection's
// own local address; without a conntrack entry it fails.
func OriginalDst(conn *net.TCPConn) (netip.AddrPort, error) {
	la, ok := conn.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: connection has no TCP local address")
	}
	v4 := la.AddrPort().Addr().Unmap().Is4()
	raw, err := conn.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			// sockaddr_in fits the 20-byte ip_mreqn-sized buffer.
			var m *unix.IPv6Mreq
			if m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); serr == nil {
				dst, serr = parseSockaddrInet4(m.Multiaddr)
			}
			return
		}
		// sockaddr_in6 fits the 32-byte ip6_mtuinfo-sized buffer.
		var info *unix.IPv6MTUInfo
		if info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst); serr == nil {
			dst, serr = parseSockaddrInet6(info.Addr)
		}
	})
	if err = errors.Join(err, serr); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("original destination of %v: no conntrack entry (was the connection redirected by the pod's rules? is nf_conntrack loaded?): %w", la, err)
		}
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w", la, err)
	}
	return dst, nil
}

// parseSockaddrInet4 decodes a struct sockaddr_in: family (host order),
// port (network order), address.
func parseSockaddrInet4(b [16]byte) (netip.AddrPort, error) {
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST returned address family %d, want AF_INET", fam)
	}
	addr := netip.AddrFrom4([4]byte(b[4:8]))
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[2:4])), nil
}

// parseSockaddrInet6 decodes a struct sockaddr_in6, whose Port field holds
// the network-order bytes.
func parseSockaddrInet6(sa unix.RawSockaddrInet6) (netip.AddrPort, error) {
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("IP6T_SO_ORIGINAL_DST returned address family %d, want AF_INET6", sa.Family)
	}
	var p [2]byte
	binary.NativeEndian.PutUint16(p[:], sa.Port)
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), binary.BigEndian.Uint16(p[:])), nil
}
