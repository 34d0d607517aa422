package redirect

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func testInstaller(t testing.TB) *Installer {
	t.Helper()
	return NewInstaller(slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestApplyReportsMissingIptables(t *testing.T) {
	in := testInstaller(t)
	in.lookPath = func(name string) (string, error) {
		if name == "ip6tables-legacy" {
			return "", errors.New("executable file not found in $PATH")
		}
		return "/usr/sbin/" + name, nil
	}
	err := in.Apply(context.Background(), "/nonexistent/netns", Config{Backend: BackendLegacy})
	if err == nil || !strings.Contains(err.Error(), "ip6tables-legacy") || !strings.Contains(err.Error(), "not in PATH") {
		t.Fatalf("Apply error = %v, want one naming the missing ip6tables-legacy", err)
	}
}

func TestPrivilegedApplyTwiceChangesNothing(t *testing.T) {
	requireRoot(t)
	for _, b := range []Backend{BackendAuto, BackendLegacy} {
		t.Run(b.String(), func(t *testing.T) {
			ctx := context.Background()
			ns := newNetns(t)
			in := testInstaller(t)
			cfg := Config{Backend: b, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}

			if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("first Apply: %v", err)
			}
			first := dump(t, ns, b)
			if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("second Apply: %v", err)
			}
			if second := dump(t, ns, b); second != first {
				t.Fatalf("second Apply changed the netns\n--- after first\n%s--- after second\n%s", first, second)
			}
			for _, want := range []string{
				":AMBIT_OUTPUT", ":AMBIT_PREROUTING",
				"-A OUTPUT -m comment --comment \"ambit: capture outbound TCP into ztunnel\" -j AMBIT_OUTPUT",
				"-A PREROUTING -m comment --comment \"ambit: capture inbound TCP into ztunnel\" -j AMBIT_PREROUTING",
				"--to-ports 15001", "--to-ports 15006", "--dport 15008",
				"-s 169.254.7.127/32", "-s fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128",
				"CONNMARK --restore-mark",
				"fwmark 0x111/0xfff lookup 100",
				"local default dev lo",
			} {
				if !strings.Contains(first, want) {
					t.Errorf("netns lacks %q:\n%s", want, first)
				}
			}
			// Each family has its own save output; both must hold our chains.
			v4, v6, _ := strings.Cut(first, "## ip -4 rule")
			if !strings.Contains(v4, "AMBIT_PREROUTING") || !strings.Contains(v6, "AMBIT_PREROUTING") {
				t.Errorf("IPv4 or IPv6 rules missing:\n%s", first)
			}
			st, err := in.Check(ctx, nsPath(ns), cfg)
			if err != nil || !st.Installed() {
				t.Fatalf("Check after Apply = %+v, %v; want installed", st, err)
			}
		})
	}
}

func TestPrivilegedRemoveLeavesOnlyForeignRules(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	ns := newNetns(t)
	in := testInstaller(t)
	cfg := Config{ProbeSourceIPs: []netip.Addr{probeV4}}

	// Someone else's rules and routing in the pod: must survive Remove.
	for _, ipt := range []string{"iptables", "ip6tables"} {
		run(t, "ip", "netns", "exec", ns, ipt, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN")
		run(t, "ip", "netns", "exec", ns, ipt, "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN")
	}
	run(t, "ip", "-n", ns, "rule", "add", "fwmark", "0x222", "lookup", "200")
	before := dump(t, ns, BackendAuto)

	if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := in.Remove(ctx, nsPath(ns), cfg); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	after := dump(t, ns, BackendAuto)
	if after != before {
		t.Fatalf("Remove left something of ours (or removed something else)\n--- before Apply\n%s--- after Remove\n%s", before, after)
	}
	for _, gone := range []string{"AMBIT", "ambit:", "0x111"} {
		if strings.Contains(after, gone) {
			t.Errorf("after Remove the netns still has %q:\n%s", gone, after)
		}
	}
	if err := in.Remove(ctx, nsPath(ns), cfg); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	st, err := in.Check(ctx, nsPath(ns), cfg)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if st.Installed() {
		t.Fatal("Check says installed after Remove")
	}
}

func TestPrivilegedCheckFindsDriftAndApplyRepairs(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	ns := newNetns(t)
	in := testInstaller(t)
	cfg := Config{}
	if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := dump(t, ns, BackendAuto)

	// Break it in four ways.
	run(t, "ip", "netns", "exec", ns, "iptables", "-t", "nat", "-D", "AMBIT_OUTPUT", "2")
	run(t, "ip", "netns", "exec", ns, "ip6tables", "-t", "mangle", "-D", "OUTPUT", "-m", "comment", "--comment",
		"ambit: mark ztunnel's inbound connections to the app and route the app's replies back to ztunnel", "-j", "AMBIT_OUTPUT")
	run(t, "ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-j", "AMBIT_PREROUTING")
	run(t, "ip", "-n", ns, "-6", "rule", "del", "fwmark", "0x111/0xfff", "lookup", "100")

	st, err := in.Check(ctx, nsPath(ns), cfg)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	got := strings.Join(st.Problems, "\n")
	for _, p := range []string{
		"IPv4: chain nat/AMBIT_OUTPUT differs from the plan",
		"IPv6: jump mangle/OUTPUT -> AMBIT_OUTPUT missing",
		"IPv4: 2 jumps nat/PREROUTING -> AMBIT_PREROUTING, want 1",
		`IPv6: missing "ip -6 rule add fwmark 0x111/0xfff priority 32764 lookup 100"`,
	} {
		if !strings.Contains(got, p) {
			t.Errorf("Check problems lack %q; got:\n%s", p, got)
		}
	}
	if len(st.Problems) != 4 {
		t.Errorf("Check found %d problems, want 4:\n%s", len(st.Problems), got)
	}

	if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
		t.Fatalf("repairing Apply: %v", err)
	}
	if st, err := in.Check(ctx, nsPath(ns), cfg); err != nil || !st.Installed() {
		t.Fatalf("Check after repair = %+v, %v", st, err)
	}
	if got := dump(t, ns, BackendAuto); got != want {
		t.Fatalf("repaired netns differs from the original install\n--- want\n%s--- got\n%s", want, got)
	}
}

// TestPrivilegedRedirectTraffic sends real connections through the rules:
// pod netns A and peer netns B on a veth pair; listeners stand in for
// ztunnel (15001, 15006, 15008), the app (8080) and a remote server (B:80).
func TestPrivilegedRedirectTraffic(t *testing.T) {
	requireRoot(t)
	pod, peer := newPodAndPeer(t)
	if err := testInstaller(t).Apply(context.Background(), nsPath(pod), Config{
		ProbeSourceIPs: []netip.Addr{probeSrcV4, probeSrcV6},
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	outbound := listenIn(t, pod, ":15001")
	inbound := listenIn(t, pod, ":15006")
	hbone := listenIn(t, pod, ":15008")
	app := listenIn(t, pod, ":8080")
	remote := listenIn(t, peer, ":80")

	fams := []struct {
		name                   string
		pod, peer, probe, loop netip.Addr
	}{
		{"IPv4", podV4, peerV4, probeSrcV4, netip.MustParseAddr("127.0.0.1")},
		{"IPv6", podV6, peerV6, probeSrcV6, netip.IPv6Loopback()},
	}
	for _, fam := range fams {
		t.Run(fam.name, func(t *testing.T) {
			ap := netip.AddrPortFrom
			t.Run("outbound is redirected to 15001", func(t *testing.T) {
				c := dialIn(t, pod, dialSpec{dst: ap(fam.peer, 80)})
				acceptFrom(t, outbound, c)
			})
			t.Run("outbound with ztunnel mark is not redirected", func(t *testing.T) {
				c := dialIn(t, pod, dialSpec{dst: ap(fam.peer, 80), mark: 0x539})
				acceptFrom(t, remote, c)
			})
			t.Run("loopback is not redirected", func(t *testing.T) {
				c := dialIn(t, pod, dialSpec{dst: ap(fam.loop, 8080)})
				acceptFrom(t, app, c)
			})
			t.Run("own pod IP is not redirected", func(t *testing.T) {
				c := dialIn(t, pod, dialSpec{dst: ap(fam.pod, 8080)})
				acceptFrom(t, app, c)
			})
			t.Run("inbound is redirected to 15006", func(t *testing.T) {
				c := dialIn(t, peer, dialSpec{dst: ap(fam.pod, 8080), src: fam.peer})
				acceptFrom(t, inbound, c)
			})
			t.Run("inbound HBONE reaches 15008", func(t *testing.T) {
				c := dialIn(t, peer, dialSpec{dst: ap(fam.pod, 15008), src: fam.peer})
				acceptFrom(t, hbone, c)
			})
			t.Run("probe source reaches the app", func(t *testing.T) {
				c := dialIn(t, peer, dialSpec{dst: ap(fam.pod, 8080), src: fam.probe})
				acceptFrom(t, app, c)
			})
			t.Run("transparent delivery gets the app's replies back", func(t *testing.T) {
				// ztunnel's inbound delivery: from the client's address,
				// marked. Without connmark + policy route the app's SYN-ACK
				// would go out to the peer, which would reset it.
				zt := dialIn(t, pod, dialSpec{dst: ap(fam.pod, 8080), src: fam.peer, mark: 0x539, transparent: true})
				a := acceptFrom(t, app, zt)
				if got := addrPort(a.RemoteAddr()).Addr(); got != fam.peer {
					t.Fatalf("app sees client %v, want %v", got, fam.peer)
				}
				for _, c := range []*net.TCPConn{zt, a} {
					if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := zt.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4)
				if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "ping" {
					t.Fatalf("app read %q, %v", buf, err)
				}
				if _, err := a.Write([]byte("pong")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(zt, buf); err != nil || string(buf) != "pong" {
					t.Fatalf("ztunnel read %q, %v", buf, err)
				}
			})
		})
	}
}

// TestPrivilegedOneRestorePerFamily checks what Apply, Check and Remove
// exec: one iptables-save per family, plus one iptables-restore per family
// only when something has to change; and that one Apply repairs a netns
// with duplicated jumps and stale rules in our chains.
func TestPrivilegedOneRestorePerFamily(t *testing.T) {
	requireRoot(t)
	for _, b := range []Backend{BackendAuto, BackendLegacy} {
		t.Run(b.String(), func(t *testing.T) {
			ctx := context.Background()
			ns := newNetns(t)
			in := testInstaller(t)
			var execs []string
			in.run = func(c *exec.Cmd) error {
				execs = append(execs, filepath.Base(c.Path))
				return c.Run()
			}
			expect := func(op string, want ...string) {
				t.Helper()
				if !slices.Equal(execs, want) {
					t.Errorf("%s exec'd %q, want %q", op, execs, want)
				}
				execs = nil
			}
			bin := func(f Family) (cmd, save, restore string) {
				cmd, save, err := b.Binaries(f)
				if err != nil {
					t.Fatal(err)
				}
				restore, err = b.RestoreBinary(f)
				if err != nil {
					t.Fatal(err)
				}
				return cmd, save, restore
			}
			ipt4, save4, restore4 := bin(IPv4)
			ipt6, save6, restore6 := bin(IPv6)
			cfg := Config{Backend: b, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}

			if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			expect("Apply on a fresh netns", save4, restore4, save6, restore6)
			want := dump(t, ns, b)

			if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("second Apply: %v", err)
			}
			expect("Apply on an installed netns", save4, save6)

			// Duplicated jumps (one bare, one exact) and stale rules in
			// our chains, in both families.
			run(t, "ip", "netns", "exec", ns, ipt4, "-t", "nat", "-A", "PREROUTING", "-j", "AMBIT_PREROUTING")
			run(t, "ip", "netns", "exec", ns, ipt4, "-t", "nat", "-A", "OUTPUT", "-m", "comment", "--comment",
				"ambit: capture outbound TCP into ztunnel", "-j", "AMBIT_OUTPUT")
			run(t, "ip", "netns", "exec", ns, ipt4, "-t", "nat", "-A", "AMBIT_OUTPUT", "-p", "udp", "-j", "RETURN")
			run(t, "ip", "netns", "exec", ns, ipt6, "-t", "mangle", "-I", "AMBIT_OUTPUT", "1", "-p", "tcp", "-j", "MARK", "--set-mark", "0x1")
			run(t, "ip", "netns", "exec", ns, ipt6, "-t", "nat", "-I", "OUTPUT", "1", "-j", "AMBIT_OUTPUT")

			st, err := in.Check(ctx, nsPath(ns), cfg)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			expect("Check", save4, save6)
			wantProblems := []string{
				"IPv4: chain nat/AMBIT_OUTPUT differs from the plan",
				"IPv4: 2 jumps nat/PREROUTING -> AMBIT_PREROUTING, want 1",
				"IPv4: 2 jumps nat/OUTPUT -> AMBIT_OUTPUT, want 1",
				"IPv6: chain mangle/AMBIT_OUTPUT differs from the plan",
				"IPv6: 2 jumps nat/OUTPUT -> AMBIT_OUTPUT, want 1",
			}
			if !slices.Equal(st.Problems, wantProblems) {
				t.Errorf("Check problems:\n got %q\nwant %q", st.Problems, wantProblems)
			}

			if err := in.Apply(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("repairing Apply: %v", err)
			}
			expect("repairing Apply", save4, restore4, save6, restore6)
			if got := dump(t, ns, b); got != want {
				t.Fatalf("repaired netns differs from a fresh install\n--- want\n%s--- got\n%s", want, got)
			}

			if err := in.Remove(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			expect("Remove", save4, restore4, save6, restore6)
			if err := in.Remove(ctx, nsPath(ns), cfg); err != nil {
				t.Fatalf("second Remove: %v", err)
			}
			expect("Remove on a clean netns", save4, save6)
			if got := dump(t, ns, b); strings.Contains(got, "AMBIT") || strings.Contains(got, "ambit:") {
				t.Errorf("Remove left rules of ours:\n%s", got)
			}
		})
	}
}
