package netns

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"ambit.dev/cni-plugin/internal/netns/podnstest"
	"ambit.dev/pkg/netnstest"
)

const prefix = "ambitns-"

func TestMain(m *testing.M) {
	netnstest.RemoveStale(prefix)
	os.Exit(m.Run())
}

func keyOfPath(t *testing.T, path string) Key {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := KeyOf(f)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOpenRefusesOtherFiles(t *testing.T) {
	if _, err := Open("/proc/self/ns/mnt"); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("Open(mnt ns) = %v", err)
	}
	if _, err := Open("/proc/self/status"); err == nil || !strings.Contains(err.Error(), "not a namespace") {
		t.Fatalf("Open(regular file) = %v", err)
	}
	if _, err := OpenInRootOf(os.Getpid(), "relative/path"); err == nil {
		t.Fatal("OpenInRootOf accepted a relative path")
	}
}

func TestPrivilegedScanFindsPodNetnsByIP(t *testing.T) {
	sb := podnstest.New(t, prefix,
		podnstest.Addr{CIDR: "10.99.7.2/24", Gateway: "10.99.7.1"},
		podnstest.Addr{CIDR: "fd00:99:7::2/64", Gateway: "fd00:99:7::1"})
	want := keyOfPath(t, sb.Path)
	s := NewScanner(slog.New(slog.NewTextHandler(io.Discard, nil)))

	for _, tc := range []struct {
		name string
		ips  []netip.Addr
	}{
		{name: "IPv4", ips: sb.IPs[:1]},
		{name: "IPv6", ips: sb.IPs[1:]},
		{name: "dual stack", ips: sb.IPs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := s.Find(tc.ips)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got, _ := KeyOf(f); got != want {
				t.Fatalf("Find = netns %s, want %s", got, want)
			}
			gws, err := s.Gateways(f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gws, sb.Gateways) {
				t.Fatalf("Gateways = %v, want %v", gws, sb.Gateways)
			}
		})
	}
	// Found from the cache, without another scan.
	scans := s.Scans()
	f, err := s.Find(sb.IPs[:1])
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if s.Scans() != scans {
		t.Fatalf("a cached netns caused %d more scans", s.Scans()-scans)
	}

	t.Run("not found", func(t *testing.T) {
		if _, err := s.Find([]netip.Addr{netip.MustParseAddr("10.99.8.2")}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Find = %v, want ErrNotFound", err)
		}
		if _, err := s.Find([]netip.Addr{netip.MustParseAddr("fd00:99:8::2")}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Find = %v, want ErrNotFound", err)
		}
	})
	t.Run("the same IP in two namespaces", func(t *testing.T) {
		podnstest.New(t, prefix, podnstest.Addr{CIDR: "10.99.7.2/24", Gateway: "10.99.7.1"})
		// Duplicates are detected by a scan (a cached netns that still
		// holds the IP through a live process is trusted).
		s := NewScanner(slog.New(slog.NewTextHandler(io.Discard, nil)))
		if _, err := s.Find(sb.IPs[:1]); !errors.Is(err, ErrAmbiguous) {
			t.Fatalf("Find = %v, want ErrAmbiguous", err)
		}
	})
	t.Run("opened through the caller's root", func(t *testing.T) {
		// /var/run is a symlink to /run: resolved inside that root.
		f, err := OpenInRootOf(os.Getpid(), "/var/run/netns/"+sb.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if got, _ := KeyOf(f); got != want {
			t.Fatalf("OpenInRootOf = netns %s, want %s", got, want)
		}
		addrs, err := Addrs(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range sb.IPs {
			if !slices.Contains(addrs, ip) {
				t.Fatalf("Addrs = %v, missing %v", addrs, ip)
			}
		}
		if _, err := OpenInRootOf(os.Getpid(), "/var/run/netns/"+sb.Name+"-gone"); err == nil {
			t.Fatal("OpenInRootOf of a missing netns succeeded")
		}
	})
}

func TestPrivilegedScanSkipsOwnNetns(t *testing.T) {
	netnstest.RequireRoot(t)
	own, err := Addrs(mustOpen(t, "/proc/self/ns/net"))
	if err != nil {
		t.Fatal(err)
	}
	var lo []netip.Addr
	for _, a := range own {
		if !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			lo = append(lo, a)
		}
	}
	if len(lo) == 0 {
		t.Fatal("the test's netns has no global address to look for")
	}
	s := NewScanner(slog.New(slog.NewTextHandler(io.Discard, nil)))
	f, err := s.Find(lo[:1])
	if err == nil {
		k, _ := KeyOf(f)
		f.Close()
		if k == keyOfPath(t, "/proc/self/ns/net") {
			t.Fatalf("Find(%v) returned the agent's own netns", lo[0])
		}
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
