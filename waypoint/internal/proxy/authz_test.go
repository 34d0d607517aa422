package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/model"
)

// syncBuffer is an io.Writer safe for the proxy's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON lines written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

const allowPublic = "ns[demo]-policy[allow-public]-rule[0]"

// publicOnly is XDS.md §12's example: ALLOW GET /public* from the client.
func publicOnly() []model.RBAC {
	return []model.RBAC{{Action: model.RBACAllow, Policies: []model.RBACPolicy{{
		Name: allowPublic,
		Permissions: []model.Permission{{And: []model.Permission{
			{Header: &model.RBACHeader{Name: ":method", Value: &model.ValueMatch{Value: "GET"}}},
			{URLPath: &model.ValueMatch{Kind: model.ValuePrefix, Value: "/public"}},
		}}},
		Principals: []model.Principal{{PeerPrincipal: &model.ValueMatch{Value: "spiffe://cluster.local/ns/demo/sa/client"}}},
	}}}}
}

// TestRBACAndAccessLog sends requests through a waypoint whose chain has
// an ALLOW policy and an access log: allowed requests reach the backend,
// others get Envoy's 403, and each is logged with the policy and the
// source principal taken from the HBONE client certificate.
func TestRBACAndAccessLog(t *testing.T) {
	m := newTestMesh(t)
	web := startBackend(t, m, "127.0.0.1", "web", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), echo)
	cfg := httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cluster("web", web))
	cfg.Chains[0].RBAC = publicOnly()
	var fields []model.LogField
	for _, n := range []string{"method", "path", "response_code", "response_code_details", "source_principal", "upstream_host", "request_id"} {
		fields = append(fields, model.LogField{Name: n, Format: map[string]string{
			"method": "%REQ(:METHOD)%", "path": "%REQ(:PATH)%", "response_code": "%RESPONSE_CODE%",
			"response_code_details": "%RESPONSE_CODE_DETAILS%", "source_principal": "%FILTER_STATE(io.istio.peer_principal:PLAIN)%",
			"upstream_host": "%UPSTREAM_HOST%", "request_id": "%REQ(X-REQUEST-ID)%",
		}[n]})
	}
	fields = append(fields, model.LogField{Name: "destination_service", Format: "web.demo.svc.cluster.local"})
	cfg.Chains[0].AccessLog = &model.AccessLog{Path: "/dev/stdout", Fields: fields, Sampled: 0, MinStatus: 400}
	var log syncBuffer
	tp := startProxyLog(t, m, cfg, &log)
	c := newClient(t, m, tp, vip)
	other := newClientAs(t, m, tp, vip, mustID(t, "spiffe://cluster.local/ns/demo/sa/other"))

	if r := c.get(t, "http://web/public/a"); r.code != http.StatusOK {
		t.Fatalf("GET /public/a = %d %q, want 200", r.code, r.body)
	}
	if r := c.do(t, http.MethodPost, "http://web/admin", nil, "X-Request-Id", "req-1"); r.code != http.StatusForbidden || r.body != rbacDeniedBody {
		t.Fatalf("POST /admin = %d %q, want 403 %q", r.code, r.body, rbacDeniedBody)
	}
	if r := other.get(t, "http://web/public/a"); r.code != http.StatusForbidden {
		t.Fatalf("GET /public/a from another principal = %d, want 403", r.code)
	}

	// Sampling 0%: only the two denials are logged (status >= 400).
	lines := log.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want the 2 denials: %v", len(lines), lines)
	}
	want := []map[string]any{
		{"method": "POST", "path": "/admin", "response_code": 403.0, "response_code_details": "rbac_access_denied_matched_policy[none]",
			"source_principal": "spiffe://cluster.local/ns/demo/sa/client", "request_id": "req-1", "destination_service": "web.demo.svc.cluster.local", "upstream_host": nil},
		{"method": "GET", "path": "/public/a", "response_code": 403.0, "source_principal": "spiffe://cluster.local/ns/demo/sa/other"},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v (%v)", i, k, lines[i][k], v, lines[i])
			}
		}
	}
	if got := tp.metric(t, "ambit_waypoint_rbac_decisions_total", map[string]string{"result": RBACAllowed, "policy": allowPublic}); got != 1 {
		t.Errorf("allowed decisions by %s = %v, want 1", allowPublic, got)
	}
	if got := tp.metric(t, "ambit_waypoint_rbac_decisions_total", map[string]string{"result": RBACDenied, "policy": "none"}); got != 2 {
		t.Errorf("denied decisions = %v, want 2", got)
	}

	// Sampling 100%: the allowed request is logged too, with its upstream.
	cfg2 := httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cluster("web", web))
	cfg2.Chains[0].RBAC = publicOnly()
	cfg2.Chains[0].AccessLog = &model.AccessLog{Path: "/dev/stdout", Fields: fields, Sampled: 100}
	cfg2.Index()
	tp.p.SetConfig(cfg2)
	if r := c.get(t, "http://web/public/b"); r.code != http.StatusOK {
		t.Fatalf("GET /public/b = %d", r.code)
	}
	lines = log.lines(t)
	last := lines[len(lines)-1]
	if last["response_code"] != 200.0 || last["response_code_details"] != "via_upstream" || last["upstream_host"] != web.endpoint().Destination.String() {
		t.Errorf("allowed request logged as %v, want 200 via_upstream to %s", last, web.endpoint().Destination)
	}
}

// TestNetworkRBAC: on a TCP chain the network RBAC filters decide before
// an endpoint is dialled: a denied source's CONNECT is answered 403 and
// the backend sees nothing; an allowed one gets its bytes through.
func TestNetworkRBAC(t *testing.T) {
	m := newTestMesh(t)
	db := startBackend(t, m, "127.0.0.1", "db", mustID(t, "spiffe://cluster.local/ns/demo/sa/db"), echo)
	dbVIP := netip.MustParseAddrPort("10.96.0.20:5432")
	cl := cluster("db", db)
	cfg := &model.Config{
		Chains: []*model.Chain{{Name: "inbound-vip|5432|tcp|db.demo.svc.cluster.local", Service: "db.demo.svc.cluster.local",
			Protocol: model.ProtocolTCP, Port: 5432, Prefixes: []netip.Prefix{netip.PrefixFrom(dbVIP.Addr(), 32)}, Cluster: "db",
			RBAC: []model.RBAC{{Action: model.RBACAllow, Policies: []model.RBACPolicy{{
				Name:        "ns[demo]-policy[db]-rule[0]",
				Permissions: []model.Permission{{Port: 5432}},
				Principals:  []model.Principal{{PeerPrincipal: &model.ValueMatch{Value: "spiffe://cluster.local/ns/demo/sa/client"}}},
			}}}},
		}},
		Clusters: map[string]*model.Cluster{"db": cl},
	}
	tp := startProxy(t, m, cfg)
	dial := func(src string) (net.Conn, error) {
		d, err := hbone.NewDialer(hbone.DialerConfig{
			Certificate: func(context.Context, identity.ID) (*tls.Certificate, error) { return m.cert(mustID(t, src)) },
			Roots:       m.ca.Roots, Logger: quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return d.Dial(ctx, hbone.Target{SourceID: mustID(t, src), DestID: tp.id, HBONEAddr: tp.addr, Authority: dbVIP})
	}

	if c, err := dial("spiffe://cluster.local/ns/demo/sa/other"); err == nil || !strings.Contains(err.Error(), "403") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("other principal: %v, want the CONNECT refused with 403", err)
	}
	if db.hits.Load() != 0 {
		t.Fatal("the backend saw the denied source")
	}
	c, err := dial("spiffe://cluster.local/ns/demo/sa/client")
	if err != nil {
		t.Fatalf("allowed principal: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("through the allowed stream: %q, %v", line, err)
	}
	if got := tp.metric(t, "ambit_waypoint_rbac_decisions_total", map[string]string{"result": RBACDenied, "policy": "none"}); got != 1 {
		t.Errorf("denied decisions = %v, want 1", got)
	}
}
