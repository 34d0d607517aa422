package integration

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/state"
	"ambit.dev/ztunnel/internal/testtopo"
)

// TestPrivilegedAuthorizationPolicy loads Authorization policies from the
// workloads file into the standard mesh and checks that the destination
// ztunnels enforce them on HBONE and plaintext, IPv4 and IPv6.
func TestPrivilegedAuthorizationPolicy(t *testing.T) {
	m, r := standardMesh(t, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	web8080 := m.startApp(r.web, 8080, shaApp)
	web9090 := m.startApp(r.web, 9090, shaApp)
	api8080 := m.startApp(r.api, 8080, shaApp)
	m.startApp(r.api, 9090, shaApp)
	z1, z2 := m.zt[r.api.Node], m.zt[r.web.Node]

	// ns2 (web): port 9090 denied to everyone; otherwise only sources of
	// namespace ns1 (so never plaintext). api (ns1): STRICT except 9090.
	port := func(p uint32) state.FileMatch { return state.FileMatch{DestinationPorts: []uint32{p}} }
	ns1 := "ns1"
	m.policies = []state.FilePolicy{
		{Name: "deny-9090", Namespace: "ns2", Scope: "NAMESPACE", Action: "DENY",
			Rules: []state.FileRule{{Clauses: []state.FileClause{{Matches: []state.FileMatch{port(9090)}}}}}},
		{Name: "allow-ns1", Namespace: "ns2", Scope: "NAMESPACE", Action: "ALLOW",
			Rules: []state.FileRule{{Clauses: []state.FileClause{{Matches: []state.FileMatch{{Namespaces: []state.FileStringMatch{{Exact: &ns1}}}}}}}}},
		{Name: "peerauthentication:api", Namespace: "ns1", Scope: "WORKLOAD_SELECTOR",
			PeerAuthentication: &state.FilePeerAuthentication{Mode: "STRICT", PortLevelMTLS: map[string]string{"9090": "PERMISSIVE"}}},
	}
	spec := m.specs[r.api]
	spec.policies = []string{"ns1/peerauthentication:api"}
	m.specs[r.api] = spec
	for _, z := range []*ztunnel{z1, z2} {
		before := strings.Count(z.proc.Output(), "workloads file reloaded")
		m.workloadsFile(z.node)
		waitFor(t, 10*time.Second, func() bool { return strings.Count(z.proc.Output(), "workloads file reloaded") > before },
			"ztunnel on %s did not reload the policies:\n%s", z.node.Name, tail(z.proc.Output(), 2000))
	}

	t.Run("HBONE from an allowed namespace is delivered from the client's IP", func(t *testing.T) {
		for i, ip := range r.web.Addrs() { // IPv4 and IPv6
			got, sent, err := m.sendSHA(ctx, r.client, netip.AddrPortFrom(ip, 8080), 64<<10)
			if err != nil {
				t.Fatalf("client -> %s: %v", ip, err)
			}
			if want := r.client.Addrs()[i]; got.ClientIP != want || got.Sum != sent {
				t.Errorf("web saw client %s sum %s, want %s %s", got.ClientIP, got.Sum, want, sent)
			}
		}
	})

	refused := func(t *testing.T, from, to *testtopo.Pod, p uint16, a *app) {
		t.Helper()
		before := a.acceptedCount()
		for _, ip := range to.Addrs() { // IPv4 and IPv6
			if err := m.expectRefused(ctx, from, netip.AddrPortFrom(ip, p)); err != nil {
				t.Fatal(err)
			}
		}
		if n := a.acceptedCount() - before; n != 0 {
			t.Fatalf("the app on %s:%d accepted %d connections that policy refuses", to.Name, p, n)
		}
	}
	t.Run("HBONE matching a DENY policy is refused", func(t *testing.T) { refused(t, r.client, r.web, 9090, web9090) })
	t.Run("plaintext has no namespace: no ALLOW policy matches", func(t *testing.T) { refused(t, r.plain, r.web, 8080, web8080) })
	t.Run("plaintext to a STRICT port is refused", func(t *testing.T) { refused(t, r.plain, r.api, 8080, api8080) })

	t.Run("plaintext to a port-level PERMISSIVE port is accepted", func(t *testing.T) {
		for i, ip := range r.api.Addrs() {
			got, sent, err := m.sendSHA(ctx, r.plain, netip.AddrPortFrom(ip, 9090), 4096)
			if err != nil {
				t.Fatalf("plain -> %s:9090: %v", ip, err)
			}
			if want := r.plain.Addrs()[i]; got.ClientIP != want || got.Sum != sent {
				t.Errorf("api saw client %s sum %s, want %s %s", got.ClientIP, got.Sum, want, sent)
			}
		}
	})

	t.Run("decisions are counted per policy", func(t *testing.T) {
		const name = "ambit_ztunnel_authorization_decisions_total"
		met2 := m.metricsText(z2)
		for _, want := range []string{
			name + `{action="ALLOW",decision="allow",policy="ns2/allow-ns1"} 2`,
			name + `{action="DENY",decision="deny",policy="ns2/deny-9090"} 2`,
			name + `{action="ALLOW",decision="deny",policy="none"} 2`,
			`ambit_ztunnel_connections_refused_total{reason="authorization_denied"} 4`,
		} {
			if !strings.Contains(met2, want) {
				t.Errorf("node2 metrics lack %s:\n%s", want, grep(met2, "authoriz"))
			}
		}
		met1 := m.metricsText(z1)
		for _, want := range []string{
			name + `{action="none",decision="allow",policy="none"} 2`,
			`ambit_ztunnel_connections_refused_total{reason="strict_mtls"} 2`,
		} {
			if !strings.Contains(met1, want) {
				t.Errorf("node1 metrics lack %s:\n%s", want, grep(met1, "authoriz")+grep(met1, "refused"))
			}
		}
		if out := z2.proc.Output(); !strings.Contains(out, "authorization: denied") || !strings.Contains(out, "ns2/deny-9090") {
			t.Errorf("node2 did not log the denies:\n%s", tail(out, 3000))
		}
	})
}
