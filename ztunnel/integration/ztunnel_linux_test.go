package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/state"
	"ambit.dev/ztunnel/internal/testtopo"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// roles are the pods of the standard two-node mesh.
type roles struct {
	client *testtopo.Pod // node1, mesh
	plain  *testtopo.Pod // node1, not in the mesh (no rules, no ztunnel)
	api    *testtopo.Pod // node1, mesh, PERMISSIVE
	strict *testtopo.Pod // node2, mesh, STRICT
	web    *testtopo.Pod // node2, mesh, PERMISSIVE
	legacy *testtopo.Pod // node2, not in the mesh
}

// standardMesh builds two nodes with three pods each and starts a ztunnel
// per node.
// echoSvc is a service with VIPs backed by the strict and web pods
// (service port 80 -> target port 8080).
var echoSvc = state.FileService{Name: "echo", Namespace: "ns2", Hostname: "echo.ns2.svc.cluster.local",
	VIPs: []string{"10.96.0.10", "fd00:96::10"}, Ports: map[string]uint32{"80": 8080}}

func standardMesh(t *testing.T, drain time.Duration) (*mesh, roles) {
	t.Helper()
	backs := map[string]map[string]uint32{"ns2/" + echoSvc.Hostname: {}}
	specs := map[string]podSpec{
		"node1-pod1": {name: "client", namespace: "ns1", sa: "client", mesh: true},
		"node1-pod2": {name: "plain", namespace: "ns1", sa: "plain"},
		"node1-pod3": {name: "api", namespace: "ns1", sa: "api", mesh: true},
		"node2-pod1": {name: "server", namespace: "ns2", sa: "server", mesh: true, strict: true, services: backs},
		"node2-pod2": {name: "web", namespace: "ns2", sa: "web", mesh: true, services: backs},
		"node2-pod3": {name: "legacy", namespace: "ns3", sa: "legacy"},
	}
	m := newMesh(t, 2, 3, func(p *testtopo.Pod) (podSpec, bool) { s, ok := specs[p.Name]; return s, ok })
	m.svcs = []state.FileService{echoSvc}
	n1, n2 := m.topo.Nodes[0], m.topo.Nodes[1]
	r := roles{client: n1.Pods[0], plain: n1.Pods[1], api: n1.Pods[2], strict: n2.Pods[0], web: n2.Pods[1], legacy: n2.Pods[2]}
	m.startZtunnel(n1, 0, drain)
	m.startZtunnel(n2, 0, drain)
	return m, r
}

func TestPrivilegedHBONEPodToPod(t *testing.T) {
	m, r := standardMesh(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := m.startApp(r.strict, 8080, shaApp)
	dst := netip.AddrPortFrom(r.strict.IP, 8080)

	for _, tc := range []struct {
		name       string
		dst        netip.AddrPort
		wantClient netip.Addr
		size       int64
	}{
		{"IPv4", dst, r.client.IP, 100 << 20},
		{"IPv6", netip.AddrPortFrom(r.strict.IPv6, 8080), r.client.IPv6, 10 << 20},
	} {
		t.Run(tc.name+" source IP preserved, data intact", func(t *testing.T) {
			got, sent, err := m.sendSHA(ctx, r.client, tc.dst, tc.size)
			if err != nil {
				t.Fatalf("client -> %s: %v", tc.dst, err)
			}
			if got.ClientIP != tc.wantClient {
				t.Errorf("server app saw client %s, want the client pod's IP %s", got.ClientIP, tc.wantClient)
			}
			if got.N != tc.size || got.Sum != sent {
				t.Errorf("server received %d bytes sha256 %s; sent %d bytes sha256 %s", got.N, got.Sum, tc.size, sent)
			}
		})
	}

	t.Run("service VIP is balanced over ready endpoints, target port mapped", func(t *testing.T) {
		web := m.startApp(r.web, 8080, shaApp)
		before := srv.acceptedCount()
		for i, vip := range []string{"10.96.0.10:80", "[fd00:96::10]:80"} {
			for range 10 {
				got, sent, err := m.sendSHA(ctx, r.client, netip.MustParseAddrPort(vip), 16<<10)
				if err != nil {
					t.Fatalf("client -> VIP %s: %v", vip, err)
				}
				if want := r.client.Addrs()[i]; got.ClientIP != want || got.Sum != sent {
					t.Fatalf("VIP %s: endpoint saw %s / %s, want %s / %s", vip, got.ClientIP, got.Sum, want, sent)
				}
			}
		}
		// 20 random picks between two endpoints: both are used (the
		// chance that one is never picked is 2^-19).
		if s, w := srv.acceptedCount()-before, web.acceptedCount(); s+w != 20 || s == 0 || w == 0 {
			t.Errorf("endpoints accepted server=%d web=%d, want 20 spread over both", s, w)
		}
		if !strings.Contains(m.metricsText(m.zt[r.client.Node]), `destination_service="`+echoSvc.Hostname+`"`) {
			t.Errorf("node1 metrics lack destination_service=%s", echoSvc.Hostname)
		}
		if !strings.Contains(m.metricsText(m.zt[r.web.Node]), `destination_service="`+echoSvc.Hostname+`"`) {
			t.Errorf("node2 metrics lack destination_service=%s (Forwarded host)", echoSvc.Hostname)
		}
	})

	t.Run("config_dump shows leaf certs and the connection; metrics count it", func(t *testing.T) {
		// Hold a connection open while looking.
		c, err := m.dial(ctx, r.client, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("partial")); err != nil {
			t.Fatal(err)
		}
		z1, z2 := m.zt[r.client.Node], m.zt[r.strict.Node]
		clientID, serverID := m.identity(r.client).String(), m.identity(r.strict).String()
		// The connection shows up once both ztunnels accepted it.
		var d1, d2 adminapi.ConfigDump
		for deadline := time.Now().Add(10 * time.Second); ; {
			d1, d2 = m.configDump(z1), m.configDump(z2)
			if hasConn(d1, "outbound", "HBONE", r.strict.IP) && hasConn(d2, "inbound", "HBONE", r.strict.IP) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("connection not in config_dump:\nnode1: %+v\nnode2: %+v", d1.Connections, d2.Connections)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, tc := range []struct {
			d    adminapi.ConfigDump
			id   string
			node string
		}{{d1, clientID, "node1"}, {d2, serverID, "node2"}} {
			cd, ok := certFor(tc.d, tc.id)
			if !ok {
				t.Errorf("%s config_dump has no certificate for %s: %+v", tc.node, tc.id, tc.d.Certificates)
				continue
			}
			if cd.State != adminapi.CertValid || len(cd.Chain) < 2 || cd.Chain[0].Type != adminapi.CertLeaf || cd.Chain[0].Subject != tc.id ||
				cd.Chain[len(cd.Chain)-1].Type != adminapi.CertRoot {
				t.Errorf("%s certificate for %s: %+v, want a valid Leaf (subject = the identity) then the Root", tc.node, tc.id, cd)
			}
			if strings.Contains(cd.Chain[0].PEM, "PRIVATE") {
				t.Errorf("%s config_dump holds key material", tc.node)
			}
		}
		out := findConn(d1, "outbound", r.strict.IP)
		in := findConn(d2, "inbound", r.strict.IP)
		if out.SrcPrincipal != clientID || out.DstPrincipal != serverID || out.SrcWorkload != "ns1/client" || out.DstWorkload != "ns2/server" {
			t.Errorf("node1 outbound connection %+v, want ns1/client (%s) -> ns2/server (%s)", out, clientID, serverID)
		}
		if in.SrcPrincipal != clientID || in.DstWorkload != "ns2/server" || !strings.HasPrefix(in.Src, r.client.IP.String()+":") {
			t.Errorf("node2 inbound connection %+v, want from %s (%s) to ns2/server", in, r.client.IP, clientID)
		}
		for _, w := range d2.Workloads {
			if captured := w.UID == r.strict.Name || w.UID == r.web.Name; w.Captured != captured {
				t.Errorf("node2 workload %s captured=%v, want %v", w.UID, w.Captured, captured)
			}
		}

		metrics := m.metricsText(z2)
		want := fmt.Sprintf(`connection_security_policy="mutual_tls",destination_principal="%s"`, serverID)
		if !strings.Contains(metrics, "istio_tcp_connections_opened_total{") || !strings.Contains(metrics, want) ||
			!strings.Contains(metrics, `reporter="destination"`) || !strings.Contains(metrics, "istio_tcp_received_bytes_total{") {
			t.Errorf("node2 /metrics lacks the inbound HBONE connection (%s):\n%s", want, grep(metrics, "istio_tcp"))
		}
		if !strings.Contains(m.metricsText(z1), `reporter="source",source_principal="`+clientID+`"`) {
			t.Errorf("node1 /metrics lacks the outbound connection:\n%s", grep(m.metricsText(z1), "istio_tcp"))
		}
	})
	if srv.acceptedCount() == 0 {
		t.Fatal("the server app accepted nothing")
	}
}

func hasConn(d adminapi.ConfigDump, dir, proto string, dstIP netip.Addr) bool {
	c := findConn(d, dir, dstIP)
	return c.Protocol == proto
}

func findConn(d adminapi.ConfigDump, dir string, dstIP netip.Addr) adminapi.ConnDump {
	for _, c := range d.Connections {
		if c.Direction == dir && strings.HasPrefix(c.Dst, dstIP.String()+":") {
			return c
		}
	}
	return adminapi.ConnDump{}
}

func certFor(d adminapi.ConfigDump, id string) (adminapi.CertDump, bool) {
	for _, c := range d.Certificates {
		if c.Identity == id {
			return c, true
		}
	}
	return adminapi.CertDump{}, false
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestPrivilegedPassthroughAndPlaintext(t *testing.T) {
	m, r := standardMesh(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	legacy := m.startApp(r.legacy, 8080, shaApp)
	strict := m.startApp(r.strict, 8080, shaApp)
	web := m.startApp(r.web, 8080, shaApp)
	api := m.startApp(r.api, 8080, shaApp)
	z1 := m.zt[r.client.Node]

	t.Run("mesh pod to non-mesh destination is passthrough", func(t *testing.T) {
		c, err := m.dial(ctx, r.client, netip.AddrPortFrom(r.legacy.IP, 8080))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// While open, node1's ztunnel proxies it as plain TCP.
		var conn adminapi.ConnDump
		for deadline := time.Now().Add(10 * time.Second); conn.Protocol == "" && time.Now().Before(deadline); {
			conn = findConn(m.configDump(z1), "outbound", r.legacy.IP)
			time.Sleep(50 * time.Millisecond)
		}
		if conn.Protocol != "TCP" || conn.DstWorkload != "ns3/legacy" {
			t.Errorf("node1 connection to the non-mesh pod = %+v, want an outbound TCP (passthrough) connection to ns3/legacy", conn)
		}
		c.Close()
		for i, ip := range r.legacy.Addrs() { // IPv4 and IPv6
			got, sent, err := m.sendSHA(ctx, r.client, netip.AddrPortFrom(ip, 8080), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if want := r.client.Addrs()[i]; got.ClientIP != want || got.Sum != sent {
				t.Errorf("non-mesh app saw %s / %s, want client %s / %s", got.ClientIP, got.Sum, want, sent)
			}
		}
		if legacy.acceptedCount() != 3 {
			t.Errorf("non-mesh app accepted %d connections, want 3", legacy.acceptedCount())
		}
	})

	t.Run("plaintext client to STRICT pod is refused", func(t *testing.T) {
		before := strict.acceptedCount()
		for _, ip := range r.strict.Addrs() { // IPv4 and IPv6
			if err := m.expectRefused(ctx, r.plain, netip.AddrPortFrom(ip, 8080)); err != nil {
				t.Fatal(err)
			}
		}
		if n := strict.acceptedCount(); n != before {
			t.Fatalf("the STRICT app accepted %d plaintext connections", n-before)
		}
		if met := m.metricsText(m.zt[r.strict.Node]); !strings.Contains(met, `ambit_ztunnel_connections_refused_total{reason="strict_mtls"} 2`) {
			t.Errorf("node2 did not count the refusal:\n%s", grep(met, "refused"))
		}
	})

	t.Run("plaintext client to PERMISSIVE pod is accepted from its own IP", func(t *testing.T) {
		for _, p := range []*testtopo.Pod{r.web, r.api} { // other node, same node
			for i, ip := range p.Addrs() { // IPv4 and IPv6
				got, sent, err := m.sendSHA(ctx, r.plain, netip.AddrPortFrom(ip, 8080), 256<<10)
				if err != nil {
					t.Fatalf("plain -> %s: %v", ip, err)
				}
				if want := r.plain.Addrs()[i]; got.ClientIP != want || got.Sum != sent {
					t.Errorf("%s app saw client %s sum %s, want %s %s", ip, got.ClientIP, got.Sum, want, sent)
				}
			}
		}
		if web.acceptedCount() != 2 || api.acceptedCount() != 2 {
			t.Errorf("accepted web=%d api=%d, want 2 each", web.acceptedCount(), api.acceptedCount())
		}
	})

	t.Run("mesh client to mesh pod on the same node", func(t *testing.T) {
		got, sent, err := m.sendSHA(ctx, r.client, netip.AddrPortFrom(r.api.IP, 8080), 1<<20)
		if err != nil || got.ClientIP != r.client.IP || got.Sum != sent {
			t.Fatalf("client -> api (same node) = %+v, %v; want client IP %s and sum %s", got, err, r.client.IP, sent)
		}
	})
}
