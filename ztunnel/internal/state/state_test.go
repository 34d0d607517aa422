package state

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/model"
)

func mustSnapshot(t *testing.T) *Snapshot {
	t.Helper()
	data, err := os.ReadFile("testdata/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(data, "cluster.local")
	if err != nil {
		t.Fatalf("Parse(testdata/mesh.yaml): %v", err)
	}
	return s
}

func TestParseDefaultsAndFields(t *testing.T) {
	s := mustSnapshot(t)
	a, ok := s.WorkloadByUID("pod-a")
	if !ok {
		t.Fatal("pod-a not found")
	}
	if a.MTLSMode != model.MTLSPermissive || a.Status != model.StatusHealthy || a.TrustDomain != "cluster.local" {
		t.Errorf("pod-a defaults: mode %q status %q td %q", a.MTLSMode, a.Status, a.TrustDomain)
	}
	if got := a.Identity().String(); got != "spiffe://cluster.local/ns/ns1/sa/sa1" {
		t.Errorf("pod-a identity %s", got)
	}
	b, _ := s.WorkloadByUID("pod-b")
	if got := b.Identity().String(); got != "spiffe://example.org/ns/ns1/sa/echo" {
		t.Errorf("pod-b identity %s", got)
	}
	if b.MTLSMode != model.MTLSStrict {
		t.Errorf("pod-b mode %q", b.MTLSMode)
	}
	if got := b.Services["ns1/echo.ns1.svc.cluster.local"][80]; got != 9090 {
		t.Errorf("pod-b target port for 80 = %d, want 9090", got)
	}
	c, _ := s.WorkloadByUID("pod-c")
	if c.Status != model.StatusUnhealthy || c.Services["ns1/echo.ns1.svc.cluster.local"][80] != 8080 {
		t.Errorf("pod-c: status %q services %v (unquoted YAML port keys must parse)", c.Status, c.Services)
	}
	d, _ := s.WorkloadByUID("vm-d")
	if d.ServiceAccount != "default" || d.Protocol != model.ProtocolNone {
		t.Errorf("vm-d: sa %q protocol %q", d.ServiceAccount, d.Protocol)
	}
	svc, ok := s.ServiceByKey("ns1/echo.ns1.svc.cluster.local")
	if !ok || svc.Waypoint == nil || svc.Waypoint.String() != "10.10.3.9:15008" {
		t.Errorf("service waypoint = %+v (default port 15008)", svc.Waypoint)
	}
}

func TestLookups(t *testing.T) {
	s := mustSnapshot(t)
	ipCases := []struct {
		name, ip, wantUID string
	}{
		{"IPv4 pod", "10.10.1.2", "pod-a"},
		{"IPv6 pod", "fd00:10:1::2", "pod-a"},
		{"IPv4-mapped IPv6", "::ffff:10.10.2.2", "pod-b"},
		{"IPv6 second pod", "fd00:10:2::2", "pod-b"},
		{"IPv4 unknown", "10.10.9.9", ""},
		{"IPv6 unknown", "fd00::99", ""},
		{"IPv4 VIP is not a workload", "10.96.0.10", ""},
	}
	for _, tc := range ipCases {
		t.Run("WorkloadByIP/"+tc.name, func(t *testing.T) {
			w, ok := s.WorkloadByIP(netip.MustParseAddr(tc.ip))
			if ok != (tc.wantUID != "") || w.UID != tc.wantUID {
				t.Fatalf("WorkloadByIP(%s) = %q, %v; want %q", tc.ip, w.UID, ok, tc.wantUID)
			}
		})
	}
	addrCases := []struct {
		name, addr       string
		wantOK, wantPort bool
		wantTarget       uint16
	}{
		{"IPv4 VIP known port", "10.96.0.10:80", true, true, 8080},
		{"IPv6 VIP known port", "[fd00:96::10]:443", true, true, 8443},
		{"IPv4 VIP unknown port", "10.96.0.10:81", true, false, 0},
		{"IPv6 VIP unknown port", "[fd00:96::10]:81", true, false, 0},
		{"IPv4 not a VIP", "10.10.1.2:80", false, false, 0},
		{"IPv6 not a VIP", "[fd00:10:1::2]:80", false, false, 0},
	}
	for _, tc := range addrCases {
		t.Run("ServiceByAddr/"+tc.name, func(t *testing.T) {
			svc, target, ok, portOK := s.ServiceByAddr(netip.MustParseAddrPort(tc.addr))
			if ok != tc.wantOK || portOK != tc.wantPort || target != tc.wantTarget {
				t.Fatalf("ServiceByAddr(%s) = %s, %d, %v, %v; want target %d ok %v portOK %v",
					tc.addr, svc.Key(), target, ok, portOK, tc.wantTarget, tc.wantOK, tc.wantPort)
			}
		})
	}
	t.Run("Endpoints", func(t *testing.T) {
		var uids []string
		for _, w := range s.Endpoints("ns1/echo.ns1.svc.cluster.local") {
			uids = append(uids, w.UID)
		}
		if strings.Join(uids, ",") != "pod-b,pod-c" {
			t.Fatalf("endpoints = %v, want pod-b,pod-c", uids)
		}
	})
	t.Run("LocalWorkloads", func(t *testing.T) {
		for node, want := range map[string]string{"node1": "pod-a", "node2": "pod-b", "node3": ""} {
			var uids []string
			for _, w := range s.LocalWorkloads(node) {
				uids = append(uids, w.UID)
			}
			if got := strings.Join(uids, ","); got != want {
				t.Errorf("LocalWorkloads(%s) = %q, want %q (pod-c has no netns)", node, got, want)
			}
		}
	})
}

func TestParseErrors(t *testing.T) {
	base := `
- uid: p1
  name: n
  namespace: ns
  addresses: ["10.0.0.1"]
  protocol: HBONE
`
	cases := []struct {
		name, yaml, want string
	}{
		{"not YAML", "workloads: [", "not valid YAML"},
		{"unknown field", "workloads:\n- uid: p\n  nmae: x\n", "field nmae not found"},
		{"missing uid", "workloads:\n- name: n\n  namespace: ns\n  addresses: [10.0.0.1]\n", "uid is required"},
		{"bad IPv4", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.300]}\n", `"10.0.0.300" is not an IP address literal`},
		{"bad IPv6", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: ['fd00::g']}\n", `"fd00::g" is not an IP address literal`},
		{"loopback IPv6", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: ['::1']}\n", "not a unicast"},
		{"no addresses", "workloads:\n- {uid: p, name: n, namespace: ns}\n", "at least one IP address"},
		{"bad protocol", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1], protocol: TCP}\n", `protocol "TCP"`},
		{"bad mode", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1], mtlsMode: OFF}\n", `mtlsMode "OFF"`},
		{"bad status", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1], status: SICK}\n", `status "SICK"`},
		{"bad trust domain", "workloads:\n- {uid: p, name: n, namespace: ns, trustDomain: 'Bad TD', addresses: [10.0.0.1]}\n", "identity"},
		{"relative netns", "workloads:\n- {uid: p, name: n, namespace: ns, node: n1, netns: run/x, addresses: [10.0.0.1]}\n", "absolute path"},
		{"netns without node", "workloads:\n- {uid: p, name: n, namespace: ns, netns: /run/x, addresses: [10.0.0.1]}\n", "node is empty"},
		{"duplicate uid", "workloads:" + base + base, `uid "p1" is used twice`},
		{"duplicate IPv4", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1]}\n- {uid: q, name: n, namespace: ns, addresses: [10.0.0.1]}\n", "address 10.0.0.1 belongs to both workload p and q"},
		{"duplicate IPv6", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: ['fd00::1']}\n- {uid: q, name: n, namespace: ns, addresses: ['fd00::1']}\n", "address fd00::1 belongs to both"},
		{"unknown service", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1], services: {ns/x.svc: {80: 80}}}\n", `backs service "ns/x.svc", which is not defined`},
		{"bad service key", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1], services: {x: {80: 80}}}\n", "must be <namespace>/<hostname>"},
		{"bad port", "services:\n- {name: s, namespace: ns, hostname: s.ns, vips: [10.96.0.1], ports: {http: 80}}\n", `port "http"`},
		{"bad target port", "services:\n- {name: s, namespace: ns, hostname: s.ns, vips: [10.96.0.1], ports: {80: 70000}}\n", "target port 70000"},
		{"no VIP", "services:\n- {name: s, namespace: ns, hostname: s.ns, ports: {80: 80}}\n", "at least one virtual IP"},
		{"duplicate VIP", "services:\n- {name: s, namespace: ns, hostname: s.ns, vips: ['fd00::10'], ports: {80: 80}}\n- {name: t, namespace: ns, hostname: t.ns, vips: ['fd00::10'], ports: {80: 80}}\n", "VIP fd00::10 belongs to both"},
		{"VIP is a pod IP", "services:\n- {name: s, namespace: ns, hostname: s.ns, vips: [10.0.0.1], ports: {80: 80}}\nworkloads:\n- {uid: p, name: n, namespace: ns, addresses: [10.0.0.1]}\n", "is also a VIP"},
		{"waypoint service and address", "services:\n- {name: s, namespace: ns, hostname: s.ns, vips: [10.96.0.1], ports: {80: 80}, waypoint: {service: gw/gw.gw, address: 10.0.0.9}}\n", "either service or address"},
		{"waypoint service without namespace", "workloads:\n- {uid: p, name: n, namespace: ns, addresses: ['fd00::1'], waypoint: {service: gw.gw}}\n", `service "gw.gw" is not namespace/hostname`},
		{"bad waypoint", "services:\n- {name: s, namespace: ns, hostname: s.ns, vips: [10.96.0.1], ports: {80: 80}, waypoint: {address: nowhere}}\n", "waypoint: address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("empty file is an empty mesh", func(t *testing.T) {
		s, err := Parse(nil, "")
		if err != nil || len(s.Workloads()) != 0 {
			t.Fatalf("Parse(empty) = %v, %v", s, err)
		}
	})
}

func TestStoreSubscribe(t *testing.T) {
	st := NewStore()
	ch, cancel := st.Subscribe()
	defer cancel()
	select {
	case <-ch:
	default:
		t.Fatal("a new subscription must start with a pending notification")
	}
	snap := mustSnapshot(t)
	st.Replace(snap)
	st.Replace(snap) // coalesces with the first
	select {
	case <-ch:
	default:
		t.Fatal("no notification after Replace")
	}
	select {
	case <-ch:
		t.Fatal("two notifications for coalesced replacements")
	default:
	}
	if st.Current() != snap || st.Generation() != 2 {
		t.Fatalf("Current/Generation = %p/%d", st.Current(), st.Generation())
	}
	cancel()
	st.Replace(Empty())
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

func TestFileWatcherKeepsLastGoodState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "workloads.yaml")
	good, err := os.ReadFile("testdata/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(good)
	st := NewStore()
	fw := NewFileWatcher(path, "cluster.local", st, slog.New(slog.DiscardHandler), time.Millisecond)
	if err := fw.Load(); err != nil {
		t.Fatal(err)
	}
	if n := len(st.Current().Workloads()); n != 4 {
		t.Fatalf("%d workloads after Load, want 4", n)
	}

	// A broken file: the state stays, the error is kept and logged once.
	write([]byte("workloads:\n- {uid: p, name: n, namespace: ns, addresses: [not-an-ip]}\n"))
	changed, err := fw.reload()
	if !changed || err == nil || !strings.Contains(err.Error(), "not-an-ip") {
		t.Fatalf("reload of a bad file = %v, %v", changed, err)
	}
	if changed, _ := fw.reload(); changed {
		t.Fatal("the same bad file reported as changed twice")
	}
	if n := len(st.Current().Workloads()); n != 4 || fw.LastError() == nil {
		t.Fatalf("after a bad file: %d workloads (want the last good 4), LastError %v", n, fw.LastError())
	}

	// A good new file replaces the state; Run picks it up.
	write([]byte("workloads:\n- {uid: p, name: n, namespace: ns, addresses: ['fd00::5'], protocol: HBONE}\n"))
	ctx, cancel := context.WithCancel(context.Background())
	ch, unsub := st.Subscribe()
	defer unsub()
	<-ch
	done := make(chan error)
	go func() { done <- fw.Run(ctx) }()
	<-ch
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w, ok := st.Current().WorkloadByIP(netip.MustParseAddr("fd00::5")); !ok || w.UID != "p" {
		t.Fatalf("new file not loaded: %+v", st.Current().Workloads())
	}
	if fw.LastError() != nil {
		t.Fatalf("LastError after a good reload: %v", fw.LastError())
	}
}

func TestFileWatcherMissingFile(t *testing.T) {
	fw := NewFileWatcher(filepath.Join(t.TempDir(), "nope.yaml"), "", NewStore(), slog.New(slog.DiscardHandler), 0)
	if err := fw.Load(); err == nil || !strings.Contains(err.Error(), "--workloads-file") {
		t.Fatalf("Load of a missing file = %v", err)
	}
}
