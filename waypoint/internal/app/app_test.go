package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// source is the source workload's ztunnel: an HBONE client presenting the
// source's certificate to the waypoint.
type source struct {
	d          *hbone.Dialer
	id, wpID   identity.ID
	wp         netip.AddrPort
	clientAddr netip.AddrPort
}

func (s *source) dial(ctx context.Context, vip netip.AddrPort) (net.Conn, error) {
	return s.d.Dial(ctx, hbone.Target{SourceID: s.id, DestID: s.wpID, HBONEAddr: s.wp, Authority: vip,
		Forwarded: []hbone.ForwardedElement{hbone.ForwardedFor(s.clientAddr, "")}})
}

// get sends one request through the waypoint on a new HBONE stream to vip,
// over HTTP/1.1 or h2c, with a forged x-forwarded-client-cert.
func (s *source) get(t *testing.T, vip netip.AddrPort, host, path string, h2c bool) (int, string) {
	t.Helper()
	code, _, body := s.getWith(t, vip, host, path, h2c, nil)
	return code, body
}

// getWith is get with request headers, returning the response headers too.
func (s *source) getWith(t *testing.T, vip netip.AddrPort, host, path string, h2c bool, header http.Header) (int, http.Header, string) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return s.dial(ctx, vip) }, DisableKeepAlives: true}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://cluster.local/ns/demo/sa/admin")
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s via %s: %v", host+path, vip, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if h2c && resp.ProtoMajor != 2 {
		t.Fatalf("h2c request answered with %s", resp.Proto)
	}
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b))
}

// tcp opens one TCP stream to vip, reads the endpoint's greeting, checks
// the echo of "ping" and closes.
func (s *source) tcp(t *testing.T, vip netip.AddrPort) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := s.dial(ctx, vip)
	if err != nil {
		t.Fatalf("TCP via %s: %v", vip, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(r, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo = %q, %v", echo, err)
	}
	return strings.TrimSpace(greeting)
}

// field returns the value of key=value in an endpoint's answer.
func field(body, key string) string {
	for f := range strings.FieldsSeq(body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// metric sums the samples of a counter, gauge or histogram (its count) whose
// labels include want.
func (a *App) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue samples
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				sum += m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				sum += float64(m.GetHistogram().GetSampleCount())
			case dto.MetricType_GAUGE:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// runWaypoint runs a waypoint (stopped at the end of the test) and waits
// for its listeners.
func runWaypoint(t *testing.T, m *mesh, cp *controlPlane) *App {
	t.Helper()
	a, err := New(waypointConfig(t, m, cp), quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-a.Bound()
	return a
}

// newSource is the source ztunnel of workload id (client address
// 10.244.3.3:41000) in front of a, whose identity is wpID.
func newSource(t *testing.T, m *mesh, a *App, id, wpID identity.ID) *source {
	t.Helper()
	cert, err := m.cert(id)
	if err != nil {
		t.Fatal(err)
	}
	d, err := hbone.NewDialer(hbone.DialerConfig{
		Certificate: func(context.Context, identity.ID) (*tls.Certificate, error) { return cert, nil },
		Roots:       m.ca.Roots, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return &source{d: d, id: id, wpID: wpID, wp: a.Addrs().HBONE.(*net.TCPAddr).AddrPort(), clientAddr: netip.MustParseAddrPort("10.244.3.3:41000")}
}

// TestWaypointEndToEnd runs a whole waypoint in process against a
// go-control-plane delta ADS server and a CA on one TLS gRPC server,
// fake ztunnels for the endpoints (IPv4 and IPv6 loopback) and an HBONE
// client standing for the source's ztunnel.
func TestWaypointEndToEnd(t *testing.T) {
	m := newMesh(t)
	wpID := mustID(t, "spiffe://cluster.local/ns/demo/sa/waypoint")
	clientID := mustID(t, "spiffe://cluster.local/ns/demo/sa/client")
	webID := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	dbID := mustID(t, "spiffe://cluster.local/ns/demo/sa/db")
	cp := startControlPlane(t, m, wpID)

	web1 := startZtunnel(t, m, "127.0.0.1", "web-1", webID)
	web2 := startZtunnel(t, m, "::1", "web-2", webID)
	web3 := startZtunnel(t, m, "::1", "web-3", webID)
	db1 := startZtunnel(t, m, "::1", "db-1", dbID)
	db2 := startZtunnel(t, m, "127.0.0.1", "db-2", dbID)
	webVIP4, webVIP6 := netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddrPort("[fd00:10:96::a]:80")
	dbVIP := netip.MustParseAddrPort("[fd00:10:96::b]:5432")
	web := xdstest.Service{Name: "web", Namespace: "demo", Port: 80, Protocol: "http",
		VIPs: []netip.Addr{webVIP4.Addr(), webVIP6.Addr()}, Endpoints: []xdstest.Endpoint{web1.endpoint(8080), web2.endpoint(8080)}}
	db := xdstest.Service{Name: "db", Namespace: "demo", Port: 5432, Protocol: "tcp",
		VIPs: []netip.Addr{dbVIP.Addr()}, Endpoints: []xdstest.Endpoint{db1.endpoint(5432), db2.endpoint(5432)}}
	// impostor's only endpoint claims an identity its ztunnel cannot
	// prove; down's only endpoint is not ready.
	impostorVIP, downVIP := netip.MustParseAddrPort("10.96.0.12:80"), netip.MustParseAddrPort("10.96.0.13:5432")
	fake := web1.endpoint(8080)
	fake.Identity = dbID.String()
	notReady := db2.endpoint(5432)
	notReady.Unhealthy = true
	impostor := xdstest.Service{Name: "impostor", Namespace: "demo", Port: 80, Protocol: "http", VIPs: []netip.Addr{impostorVIP.Addr()}, Endpoints: []xdstest.Endpoint{fake}}
	down := xdstest.Service{Name: "down", Namespace: "demo", Port: 5432, Protocol: "tcp", VIPs: []netip.Addr{downVIP.Addr()}, Endpoints: []xdstest.Endpoint{notReady}}
	// api speaks HTTP/2 (h2c) to its app: cluster http2_protocol_options.
	apiVIP := netip.MustParseAddrPort("[fd00:10:96::e]:8443")
	api := xdstest.Service{Name: "api", Namespace: "demo", Port: 8443, Protocol: "http2", VIPs: []netip.Addr{apiVIP.Addr()},
		Endpoints: []xdstest.Endpoint{web3.endpoint(8080)}}
	all := func() []xdstest.Service { return []xdstest.Service{web, db, impostor, down, api} }

	a := runWaypoint(t, m, cp)
	addrs := a.Addrs()
	readyURL := "http://" + addrs.Ready.String() + "/healthz/ready"

	// Not ready without configuration, and says why.
	eventually(t, "certificate from the CA", func() error {
		if !a.hasCertificate() {
			return errors.New("no certificate yet")
		}
		return nil
	})
	if code, body, err := httpGet(readyURL); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "no complete configuration") {
		t.Fatalf("ready before xDS: %d %q %v", code, body, err)
	}
	src := newSource(t, m, a, clientID, wpID)
	var se *hbone.StatusError
	if _, err := src.dial(context.Background(), webVIP4); !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(se.Reason, "no configuration") {
		t.Fatalf("CONNECT before any configuration: %v", err)
	}

	cp.set(t, all(), nil)
	eventually(t, "ready", func() error {
		code, body, err := httpGet(readyURL)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})

	// The node the control plane saw (XDS.md §1).
	first := cp.seen()[0]
	md := first.GetNode().GetMetadata().GetFields()
	if first.GetNode().GetId() != "waypoint~10.244.1.9~waypoint-7d9f-abcde.demo~demo.svc.cluster.local" ||
		md["GATEWAY"].GetStringValue() != "demo/waypoint" || md["INSTANCE_IPS"].GetStringValue() != "10.244.1.9,fd00:10:244:1::9" ||
		md["SERVICE_ACCOUNT"].GetStringValue() != "waypoint" || first.GetTypeUrl() != resource.ListenerType {
		t.Fatalf("first request: %v", first)
	}

	// HTTP: round robin over both endpoints, which see the waypoint's
	// identity and never the forged XFCC; Host is kept.
	answered := map[string]int{}
	for i := range 4 {
		code, body := src.get(t, webVIP4, "web.demo.svc.cluster.local", fmt.Sprintf("/r%d", i), false)
		if code != http.StatusOK || field(body, "principal") != wpID.String() || field(body, "xfcc") != `""` ||
			field(body, "host") != "web.demo.svc.cluster.local" || field(body, "proto") != "HTTP/1.1" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		answered[field(body, "endpoint")]++
	}
	if answered["web-1"] != 2 || answered["web-2"] != 2 {
		t.Fatalf("answers per endpoint %v, want 2 each (round robin)", answered)
	}
	// h2c prior knowledge, to the IPv6 VIP, addressed by VIP.
	code, body := src.get(t, webVIP6, "[fd00:10:96::a]:80", "/h2", true)
	if code != http.StatusOK || field(body, "principal") != wpID.String() {
		t.Fatalf("h2c: %d %q", code, body)
	}
	answered[field(body, "endpoint")]++
	// HTTP/1.1 from the source, h2c to an http2 service's app.
	if code, body := src.get(t, apiVIP, "api.demo.svc.cluster.local:8443", "/", false); code != http.StatusOK ||
		field(body, "proto") != "HTTP/2.0" || field(body, "endpoint") != "web-3" {
		t.Fatalf("http2 service: %d %q", code, body)
	}
	// A Host outside the service's names (a pod IP dialled directly, or
	// anything else) is routed as the service the CONNECT chose (the
	// "*" domain of XDS.md §7): it reaches that service's endpoints
	// and nothing else, with the Host kept.
	if code, body := src.get(t, webVIP4, "evil.example.com", "/", false); code != http.StatusOK ||
		field(body, "host") != "evil.example.com" || !strings.HasPrefix(field(body, "endpoint"), "web-") {
		t.Fatalf("unknown Host: %d %q", code, body)
	} else {
		answered[field(body, "endpoint")]++
	}
	// The endpoints' ztunnels got CONNECTs to their own pod IP:port with
	// the original source and the service in Forwarded.
	for _, z := range []*ztunnel{web1, web2} {
		for _, r := range z.requests() {
			if r.Dst != netip.AddrPortFrom(z.addr.Addr(), 8080) || r.SourceID != wpID || r.Src != src.clientAddr ||
				len(r.Forwarded) != 1 || r.Forwarded[0].Host != "web.demo.svc.cluster.local" {
				t.Fatalf("%s saw %+v", z.name, r)
			}
		}
	}

	// TCP: round robin, the waypoint's identity, bytes spliced.
	tcpAnswered := map[string]int{}
	for range 2 {
		g := src.tcp(t, dbVIP)
		if field(g, "principal") != wpID.String() {
			t.Fatalf("greeting %q", g)
		}
		tcpAnswered[field(g, "endpoint")]++
	}
	if tcpAnswered["db-1"] != 1 || tcpAnswered["db-2"] != 1 {
		t.Fatalf("TCP answers %v, want one each", tcpAnswered)
	}

	// Unknown destination: refused with 400 before anything is dialed.
	_, err := src.dial(context.Background(), netip.MustParseAddrPort("10.96.0.99:80"))
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest || !strings.Contains(se.Reason, "unknown destination") {
		t.Fatalf("unknown VIP: %v", err)
	}
	// No ready endpoint: 503 before the stream is accepted.
	_, err = src.dial(context.Background(), downVIP)
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(se.Reason, "no healthy upstream") {
		t.Fatalf("service without ready endpoint: %v", err)
	}
	// The endpoint's ztunnel must prove the identity EDS gives it.
	if code, body := src.get(t, impostorVIP, "impostor.demo", "/", false); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "peer presented "+webID.String()+", want "+dbID.String()) {
		t.Fatalf("endpoint with the wrong identity: %d %q", code, body)
	}

	// Metrics, labelled with the source principal.
	srcLabels := func(kv ...string) map[string]string {
		l := map[string]string{"reporter": "waypoint", "source_principal": clientID.String(), "source_workload_namespace": "demo"}
		for i := 0; i < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	for _, ep := range []string{"web-1", "web-2"} {
		l := srcLabels("destination_service", "web.demo.svc.cluster.local", "destination_workload", ep,
			"destination_principal", webID.String(), "destination_workload_namespace", "demo", "response_code", "200")
		if got := a.metric(t, "istio_requests_total", l); got != float64(answered[ep]) {
			t.Errorf("istio_requests_total{%s} = %v, want %d", ep, got, answered[ep])
		}
		if got := a.metric(t, "istio_request_duration_milliseconds", l); got != float64(answered[ep]) {
			t.Errorf("istio_request_duration_milliseconds{%s} count = %v, want %d", ep, got, answered[ep])
		}
	}
	for _, ep := range []string{"db-1", "db-2"} {
		l := srcLabels("destination_service", "db.demo.svc.cluster.local", "destination_workload", ep, "destination_principal", dbID.String())
		if got := a.metric(t, "istio_tcp_connections_opened_total", l); got != 1 {
			t.Errorf("opened{%s} = %v", ep, got)
		}
		if got := a.metric(t, "istio_tcp_received_bytes_total", l); got != 4 {
			t.Errorf("received bytes{%s} = %v, want 4 (ping)", ep, got)
		}
		greeting := fmt.Sprintf("endpoint=%s principal=%s\n", ep, wpID)
		if got := a.metric(t, "istio_tcp_sent_bytes_total", l); got != float64(len(greeting)+4) {
			t.Errorf("sent bytes{%s} = %v, want %d", ep, got, len(greeting)+4)
		}
		eventually(t, "connection closed metric", func() error {
			if got := a.metric(t, "istio_tcp_connections_closed_total", l); got != 1 {
				return fmt.Errorf("closed{%s} = %v", ep, got)
			}
			return nil
		})
	}
	if code, body, err := httpGet("http://" + addrs.Metrics.String() + "/metrics"); err != nil || code != 200 || !strings.Contains(body, `istio_requests_total{`) {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	if code, body, err := httpGet("http://" + addrs.Admin.String() + "/config_dump"); err != nil || code != 200 || !strings.Contains(body, "inbound-vip|5432|tcp|db.demo.svc.cluster.local") {
		t.Fatalf("/config_dump: %d %v %.200s", code, err, body)
	}

	// An endpoint update through EDS takes effect: web-2 is replaced by
	// web-3.
	web.Endpoints = []xdstest.Endpoint{web1.endpoint(8080), web3.endpoint(8080)}
	cp.set(t, all(), nil)
	eventually(t, "web-3 in rotation", func() error {
		if _, body := src.get(t, webVIP4, "web", "/", false); field(body, "endpoint") != "web-3" {
			return fmt.Errorf("answered by %q", field(body, "endpoint"))
		}
		return nil
	})
	after := map[string]int{}
	for range 4 {
		_, body := src.get(t, webVIP4, "web.demo:80", "/", false)
		after[field(body, "endpoint")]++
	}
	if after["web-1"] != 2 || after["web-3"] != 2 {
		t.Fatalf("after the update: %v, want web-1 and web-3 twice each", after)
	}

	// An HTTPRoute rule (XDS.md §7.1) through xDS: x-canary: yes goes to
	// api's cluster (web-3 over h2c) with a response header; the rest
	// keeps the default route.
	cp.set(t, all(), func(res map[resource.Type][]types.Resource) {
		for _, r := range res[resource.RouteType] {
			rc := r.(*routev3.RouteConfiguration)
			if rc.GetName() != web.RouteName() {
				continue
			}
			vh := rc.VirtualHosts[0]
			vh.Routes = append([]*routev3.Route{{
				Name: "demo.canary.0.0",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"},
					Headers: []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
						StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "yes|true"}}}}}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: api.ClusterName()},
					Timeout:          durationpb.New(0), RetryPolicy: xdstest.DefaultRetryPolicy()}},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route", Value: "canary"},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
			}}, vh.Routes...)
		}
	})
	canary := http.Header{"X-Canary": {"yes"}}
	eventually(t, "the canary route", func() error {
		if code, h, body := src.getWith(t, webVIP4, "web", "/api/v1", false, canary); code != http.StatusOK ||
			field(body, "endpoint") != "web-3" || field(body, "proto") != "HTTP/2.0" || h.Get("X-Route") != "canary" {
			return fmt.Errorf("%d %q %v", code, body, h)
		}
		return nil
	})
	for _, path := range []string{"/apiv1", "/other"} {
		// (web's own endpoints speak HTTP/1.1; web-3 is also one of them.)
		if _, h, body := src.getWith(t, webVIP4, "web", path, false, canary); field(body, "proto") != "HTTP/1.1" || h.Get("X-Route") != "" {
			t.Fatalf("%s with x-canary took the canary route: %q", path, body)
		}
	}
	if _, _, body := src.getWith(t, webVIP6, "web", "/api/v1", true, http.Header{"X-Canary": {"no"}}); field(body, "proto") != "HTTP/1.1" {
		t.Fatalf("x-canary: no took the canary route: %q", body)
	}

	// A cluster the waypoint cannot honour is NACKed and the previous one
	// keeps serving.
	cp.set(t, all(), func(res map[resource.Type][]types.Resource) {
		for _, r := range res[resource.ClusterType] {
			if c := r.(*clusterv3.Cluster); c.GetName() == db.ClusterName() {
				c.LbPolicy = clusterv3.Cluster_MAGLEV
			}
		}
	})
	eventually(t, "NACK", func() error {
		for _, r := range cp.seen() {
			if r.GetTypeUrl() == resource.ClusterType && r.GetErrorDetail() != nil {
				msg := r.GetErrorDetail().GetMessage()
				if !strings.Contains(msg, db.ClusterName()) || !strings.Contains(msg, "lb_policy MAGLEV") {
					t.Fatalf("NACK detail %q", msg)
				}
				return nil
			}
		}
		return errors.New("no NACK seen")
	})
	still := map[string]int{}
	for range 2 {
		still[field(src.tcp(t, dbVIP), "endpoint")]++
	}
	if still["db-1"] != 1 || still["db-2"] != 1 {
		t.Fatalf("after the NACK: %v", still)
	}
	if err := a.Ready(); err != nil {
		t.Fatalf("not ready after a NACK: %v", err)
	}
	if missing := a.proxy.Config().Missing; len(missing) > 0 {
		t.Fatalf("config incomplete after NACK: %v", missing)
	}
}
