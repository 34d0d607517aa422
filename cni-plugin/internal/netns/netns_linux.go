package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// KeyOf returns the key of the namespace f refers to.
func KeyOf(f *os.File) (Key, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Key{}, fmt.Errorf("stat netns descriptor %s: %w", f.Name(), err)
	}
	return Key{Dev: st.Dev, Ino: st.Ino}, nil
}

// Open opens path (a bind-mounted netns file or /proc/<pid>/ns/net) and
// checks that it is a network namespace.
func Open(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	if err := checkNet(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// OpenInRootOf opens path as the process pid sees it: resolved inside
// /proc/<pid>/root, so that a CNI plugin's netns path (given in its mount
// namespace, e.g. /var/run/netns/cni-…) names the same file here. Absolute
// symlinks on the way (/var/run → /run) are resolved in that root too
// (openat2 RESOLVE_IN_ROOT on the directory); the last component is opened
// with a plain openat, so that it may be a magic link (/proc/<pid>/ns/net).
func OpenInRootOf(pid int, path string) (*os.File, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("open netns %s: unknown caller pid %d", path, pid)
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("open netns %q: the path must be absolute", path)
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	rootDir, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("open the root of the caller (pid %d) to resolve netns %s: %w (does the node agent run with hostPID?)", pid, path, err)
	}
	defer rootDir.Close()
	dir, base := filepath.Split(filepath.Clean(path))
	dfd, err := unix.Openat2(int(rootDir.Fd()), dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT,
	})
	if errors.Is(err, unix.ENOSYS) {
		// Kernels before 5.6: plain lookup (absolute symlinks escape).
		return Open(filepath.Join(root, path))
	}
	if err != nil {
		return nil, fmt.Errorf("open netns %s of the caller (pid %d): directory %s: %w (is the pod's sandbox gone?)", path, pid, dir, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s of the caller (pid %d): %w (is the pod's sandbox gone?)", path, pid, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(root, path))
	if err := checkNet(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// checkNet verifies f is an nsfs file of a network namespace.
func checkNet(f *os.File) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if uint64(sfs.Type) != uint64(unix.NSFS_MAGIC) {
		return errors.New("not a namespace file (nsfs)")
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("ioctl NS_GET_NSTYPE: %w", err)
	}
	if t != unix.CLONE_NEWNET {
		return fmt.Errorf("namespace of type %#x, not a network namespace", t)
	}
	return nil
}

// withHandle runs fn with a netlink handle whose socket lives in f's
// namespace.
func withHandle(f *os.File, fn func(h *netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(f.Fd())))
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w (needs CAP_SYS_ADMIN)", f.Name(), err)
	}
	defer h.Close()
	return fn(h)
}

// dumpRetries bounds retries of a netlink dump that the kernel interrupted
// because the table changed meanwhile.
const dumpRetries = 5

// Addrs lists the IP addresses assigned in f's namespace.
func Addrs(f *os.File) ([]netip.Addr, error) {
	var out []netip.Addr
	err := withHandle(f, func(h *netlink.Handle) error {
		var addrs []netlink.Addr
		var err error
		for range dumpRetries {
			addrs, err = h.AddrList(nil, netlink.FAMILY_ALL)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			if a.IPNet == nil {
				continue
			}
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
		return nil
	})
	return out, err
}

// DefaultGateways returns the gateways of the default routes (IPv4 and
// IPv6, main table) in f's namespace. On a bridge CNI that is the bridge's
// address on the node, the source of the kubelet's probes. Link-local
// gateways are left out: a probe to a pod's global address never comes
// from one.
func DefaultGateways(f *os.File) ([]netip.Addr, error) {
	var out []netip.Addr
	err := withHandle(f, func(h *netlink.Handle) error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			var routes []netlink.Route
			var err error
			for range dumpRetries {
				routes, err = h.RouteList(nil, fam)
				if !errors.Is(err, netlink.ErrDumpInterrupted) {
					break
				}
			}
			if err != nil {
				return fmt.Errorf("list routes: %w", err)
			}
			for _, r := range routes {
				if r.Dst != nil {
					if ones, _ := r.Dst.Mask.Size(); ones != 0 {
						continue
					}
				}
				gws := []net.IP{r.Gw}
				for _, nh := range r.MultiPath {
					gws = append(gws, nh.Gw)
				}
				for _, g := range gws {
					if ip, ok := gatewayAddr(g); ok && !slices.Contains(out, ip) {
						out = append(out, ip)
					}
				}
			}
		}
		return nil
	})
	return out, err
}

// gatewayAddr converts a route's gateway, dropping absent, unspecified
// and link-local ones.
func gatewayAddr(g net.IP) (netip.Addr, bool) {
	ip, ok := netip.AddrFromSlice(g)
	if !ok {
		return netip.Addr{}, false
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsLinkLocalUnicast() {
		return netip.Addr{}, false
	}
	return ip, true
}

// pidNetnsPath is /proc/<pid>/ns/net under procRoot.
func pidNetnsPath(procRoot string, pid int) string {
	return filepath.Join(procRoot, strconv.Itoa(pid), "ns", "net")
}
