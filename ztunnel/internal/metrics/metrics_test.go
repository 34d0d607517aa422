package metrics

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, reg
}

var fullLabels = ConnLabels{
	Reporter:             ReporterSource,
	SourceWorkload:       "client",
	SourceNamespace:      "ns1",
	SourcePrincipal:      "spiffe://cluster.local/ns/ns1/sa/sa1",
	DestinationWorkload:  "server",
	DestinationNamespace: "ns2",
	DestinationPrincipal: "spiffe://cluster.local/ns/ns2/sa/sa2",
	DestinationService:   "echo.ns2.svc.cluster.local",
	SecurityPolicy:       SecurityMutualTLS,
}

func TestConnectionCounters(t *testing.T) {
	type step struct {
		sent, received int64
	}
	tests := []struct {
		name      string
		labels    ConnLabels
		src, dst  string
		steps     []step
		closes    int
		want      string // exposition of the four istio_tcp_* counters
		wantLive  int
		wantGauge float64
	}{
		{
			name:   "IPv4 HBONE open, bytes both ways, closed",
			labels: fullLabels,
			src:    "10.10.1.2:40000", dst: "10.10.2.3:8080",
			steps:  []step{{100, 0}, {0, 250}, {5, 7}},
			closes: 1,
			want: `
# HELP istio_tcp_connections_closed_total TCP connections closed.
# TYPE istio_tcp_connections_closed_total counter
istio_tcp_connections_closed_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/ns2/sa/sa2",destination_service="echo.ns2.svc.cluster.local",destination_workload="server",destination_workload_namespace="ns2",reporter="source",source_principal="spiffe://cluster.local/ns/ns1/sa/sa1",source_workload="client",source_workload_namespace="ns1"} 1
# HELP istio_tcp_connections_opened_total TCP connections opened, counted when the proxy accepts or originates them.
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/ns2/sa/sa2",destination_service="echo.ns2.svc.cluster.local",destination_workload="server",destination_workload_namespace="ns2",reporter="source",source_principal="spiffe://cluster.local/ns/ns1/sa/sa1",source_workload="client",source_workload_namespace="ns1"} 1
# HELP istio_tcp_received_bytes_total Bytes forwarded from the destination of a connection back to its source, added as they flow.
# TYPE istio_tcp_received_bytes_total counter
istio_tcp_received_bytes_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/ns2/sa/sa2",destination_service="echo.ns2.svc.cluster.local",destination_workload="server",destination_workload_namespace="ns2",reporter="source",source_principal="spiffe://cluster.local/ns/ns1/sa/sa1",source_workload="client",source_workload_namespace="ns1"} 257
# HELP istio_tcp_sent_bytes_total Bytes forwarded from the source of a connection towards its destination, added as they flow.
# TYPE istio_tcp_sent_bytes_total counter
istio_tcp_sent_bytes_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/ns2/sa/sa2",destination_service="echo.ns2.svc.cluster.local",destination_workload="server",destination_workload_namespace="ns2",reporter="source",source_principal="spiffe://cluster.local/ns/ns1/sa/sa1",source_workload="client",source_workload_namespace="ns1"} 105
`,
			wantLive: 0, wantGauge: 0,
		},
		{
			name:   "IPv6 plaintext, empty labels reported as unknown, still open",
			labels: ConnLabels{Reporter: ReporterDestination, DestinationWorkload: "server", DestinationNamespace: "ns2", SecurityPolicy: SecurityNone},
			src:    "[fd00::1]:40000", dst: "[fd00::2]:8080",
			steps:  []step{{42, 0}},
			closes: 0,
			want: `
# HELP istio_tcp_connections_closed_total TCP connections closed.
# TYPE istio_tcp_connections_closed_total counter
istio_tcp_connections_closed_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="server",destination_workload_namespace="ns2",reporter="destination",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 0
# HELP istio_tcp_connections_opened_total TCP connections opened, counted when the proxy accepts or originates them.
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="server",destination_workload_namespace="ns2",reporter="destination",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 1
# HELP istio_tcp_received_bytes_total Bytes forwarded from the destination of a connection back to its source, added as they flow.
# TYPE istio_tcp_received_bytes_total counter
istio_tcp_received_bytes_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="server",destination_workload_namespace="ns2",reporter="destination",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 0
# HELP istio_tcp_sent_bytes_total Bytes forwarded from the source of a connection towards its destination, added as they flow.
# TYPE istio_tcp_sent_bytes_total counter
istio_tcp_sent_bytes_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="server",destination_workload_namespace="ns2",reporter="destination",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 42
`,
			wantLive: 1, wantGauge: 1,
		},
		{
			name:   "IPv4 closed three times counts one close",
			labels: ConnLabels{Reporter: ReporterSource, SecurityPolicy: SecurityNone},
			src:    "10.10.1.2:1", dst: "10.10.9.9:80",
			closes: 3,
			want: `
# HELP istio_tcp_connections_closed_total TCP connections closed.
# TYPE istio_tcp_connections_closed_total counter
istio_tcp_connections_closed_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="unknown",destination_workload_namespace="unknown",reporter="source",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 1
# HELP istio_tcp_connections_opened_total TCP connections opened, counted when the proxy accepts or originates them.
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="unknown",destination_workload_namespace="unknown",reporter="source",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 1
# HELP istio_tcp_received_bytes_total Bytes forwarded from the destination of a connection back to its source, added as they flow.
# TYPE istio_tcp_received_bytes_total counter
istio_tcp_received_bytes_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="unknown",destination_workload_namespace="unknown",reporter="source",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 0
# HELP istio_tcp_sent_bytes_total Bytes forwarded from the source of a connection towards its destination, added as they flow.
# TYPE istio_tcp_sent_bytes_total counter
istio_tcp_sent_bytes_total{connection_security_policy="none",destination_principal="unknown",destination_service="unknown",destination_workload="unknown",destination_workload_namespace="unknown",reporter="source",source_principal="unknown",source_workload="unknown",source_workload_namespace="unknown"} 0
`,
			wantLive: 0, wantGauge: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, reg := newTest(t)
			c := m.Open(tc.labels, DirectionOutbound, ProtocolHBONE, netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst))
			for _, s := range tc.steps {
				c.AddSent(s.sent)
				c.AddReceived(s.received)
			}
			for range tc.closes {
				c.Close()
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want),
				MetricConnectionsOpened, MetricConnectionsClosed, MetricSentBytes, MetricReceivedBytes); err != nil {
				t.Error(err)
			}
			if got := len(m.Live()); got != tc.wantLive {
				t.Errorf("Live() has %d connections, want %d", got, tc.wantLive)
			}
			if got := testutil.ToFloat64(m.active); got != tc.wantGauge {
				t.Errorf("%s = %v, want %v", MetricActive, got, tc.wantGauge)
			}
		})
	}
}

func TestBytesCountedWhileOpen(t *testing.T) {
	m, _ := newTest(t)
	c := m.Open(fullLabels, DirectionInbound, ProtocolHBONE, netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"))
	defer c.Close()
	sent := m.sent.WithLabelValues(fullLabels.values()...)
	c.AddSent(10)
	if got := testutil.ToFloat64(sent); got != 10 {
		t.Fatalf("sent bytes before close = %v, want 10", got)
	}
	c.AddSent(0)
	c.AddSent(-5) // ignored: counters never go down
	c.AddSent(1)
	if got := testutil.ToFloat64(sent); got != 11 {
		t.Fatalf("sent bytes = %v, want 11", got)
	}
}

func TestLive(t *testing.T) {
	m, _ := newTest(t)
	opened := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	m.now = func() time.Time { return opened }

	type open struct {
		dir, proto, src, dst string
		sent, recv           int64
		close                bool
	}
	opens := []open{
		{DirectionOutbound, ProtocolHBONE, "10.10.1.2:40000", "10.10.2.3:8080", 1, 2, false},
		{DirectionInbound, ProtocolTCP, "[fd00::1]:40001", "[fd00::2]:80", 3, 4, true},
		{DirectionInbound, ProtocolHBONE, "[fd00::3]:40002", "[fd00::4]:443", 5, 6, false},
	}
	for _, o := range opens {
		c := m.Open(fullLabels, o.dir, o.proto, netip.MustParseAddrPort(o.src), netip.MustParseAddrPort(o.dst))
		c.AddSent(o.sent)
		c.AddReceived(o.recv)
		if o.close {
			c.Close()
		}
	}
	want := []LiveConn{
		{ID: 1, Direction: DirectionOutbound, Protocol: ProtocolHBONE, Src: netip.MustParseAddrPort("10.10.1.2:40000"),
			Dst: netip.MustParseAddrPort("10.10.2.3:8080"), Labels: fullLabels, Opened: opened, BytesSent: 1, BytesReceived: 2},
		{ID: 3, Direction: DirectionInbound, Protocol: ProtocolHBONE, Src: netip.MustParseAddrPort("[fd00::3]:40002"),
			Dst: netip.MustParseAddrPort("[fd00::4]:443"), Labels: fullLabels, Opened: opened, BytesSent: 5, BytesReceived: 6},
	}
	got := m.Live()
	if len(got) != len(want) {
		t.Fatalf("Live() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Live()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestRefusedAndDialFailures(t *testing.T) {
	tests := []struct {
		name    string
		reasons []string
		dials   int
		want    string
	}{
		{
			name:    "by reason, empty reason is unknown",
			reasons: []string{RefusedStrictMTLS, RefusedStrictMTLS, RefusedAuthorization, ""},
			dials:   2,
			want: `
# HELP ambit_ztunnel_connections_refused_total Connections ztunnel refused, by reason.
# TYPE ambit_ztunnel_connections_refused_total counter
ambit_ztunnel_connections_refused_total{reason="authorization_denied"} 1
ambit_ztunnel_connections_refused_total{reason="strict_mtls"} 2
ambit_ztunnel_connections_refused_total{reason="unknown"} 1
# HELP ambit_ztunnel_hbone_dial_failures_total HBONE tunnels that could not be established (TCP, TLS or CONNECT failed).
# TYPE ambit_ztunnel_hbone_dial_failures_total counter
ambit_ztunnel_hbone_dial_failures_total 2
`,
		},
		{
			name: "nothing refused",
			want: `
# HELP ambit_ztunnel_hbone_dial_failures_total HBONE tunnels that could not be established (TCP, TLS or CONNECT failed).
# TYPE ambit_ztunnel_hbone_dial_failures_total counter
ambit_ztunnel_hbone_dial_failures_total 0
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, reg := newTest(t)
			for _, r := range tc.reasons {
				m.Refused(r)
			}
			for range tc.dials {
				m.HBONEDialFailed()
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want), MetricRefused, MetricHBONEDialFailures); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNewTwiceOnOneRegistryFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatalf("first New: %v", err)
	}
	_, err := New(reg)
	if err == nil || !strings.Contains(err.Error(), "same registry") {
		t.Fatalf("second New on the same registry: err = %v, want an error naming the duplicate registration", err)
	}
}

func TestNilIsSafe(t *testing.T) {
	var m *Metrics
	c := m.Open(fullLabels, DirectionOutbound, ProtocolTCP, netip.AddrPort{}, netip.AddrPort{})
	if c != nil {
		t.Fatalf("nil Metrics Open = %v, want nil", c)
	}
	c.AddSent(1)
	c.AddReceived(1)
	c.Close()
	m.Refused(RefusedStrictMTLS)
	m.HBONEDialFailed()
	if got := m.Live(); got != nil {
		t.Fatalf("nil Metrics Live = %v, want nil", got)
	}
}

func TestConcurrentConnections(t *testing.T) {
	m, reg := newTest(t)
	const workers, perWorker = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				c := m.Open(fullLabels, DirectionOutbound, ProtocolHBONE,
					netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(w), 1}), uint16(i+1)),
					netip.MustParseAddrPort("10.0.0.2:80"))
				c.AddSent(2)
				c.AddReceived(3)
				c.Close()
				c.Close()
			}
		})
	}
	wg.Wait()
	n := float64(workers * perWorker)
	vals := fullLabels.values()
	for name, want := range map[string]float64{
		MetricConnectionsOpened: n,
		MetricConnectionsClosed: n,
		MetricSentBytes:         2 * n,
		MetricReceivedBytes:     3 * n,
	} {
		vec := map[string]*prometheus.CounterVec{
			MetricConnectionsOpened: m.opened, MetricConnectionsClosed: m.closed,
			MetricSentBytes: m.sent, MetricReceivedBytes: m.received,
		}[name]
		if got := testutil.ToFloat64(vec.WithLabelValues(vals...)); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := testutil.ToFloat64(m.active); got != 0 {
		t.Errorf("%s = %v after all closed, want 0", MetricActive, got)
	}
	if got := m.Live(); len(got) != 0 {
		t.Errorf("Live() after all closed = %d connections, want 0", len(got))
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
}

func BenchmarkOpenAddClose(b *testing.B) {
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	src, dst := netip.MustParseAddrPort("10.10.1.2:40000"), netip.MustParseAddrPort("10.10.2.3:8080")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := m.Open(fullLabels, DirectionOutbound, ProtocolHBONE, src, dst)
			for range 8 {
				c.AddSent(16 << 10)
				c.AddReceived(16 << 10)
			}
			c.Close()
		}
	})
}

func BenchmarkAddSent(b *testing.B) {
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	c := m.Open(fullLabels, DirectionOutbound, ProtocolHBONE, netip.MustParseAddrPort("10.10.1.2:40000"), netip.MustParseAddrPort("10.10.2.3:8080"))
	defer c.Close()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.AddSent(16 << 10)
		}
	})
}

func TestAuthzDecisions(t *testing.T) {
	m, reg := newTest(t)
	m.AuthzDecision(DecisionAllow, "", "")
	m.AuthzDecision(DecisionAllow, "ns1/allow-foo", "ALLOW")
	m.AuthzDecision(DecisionDeny, "ns1/deny-bar", "DENY")
	m.AuthzDecision(DecisionDeny, "ns1/deny-bar", "DENY")
	m.AuthzDecision(DecisionDeny, "", "ALLOW")
	var nilMetrics *Metrics
	nilMetrics.AuthzDecision(DecisionDeny, "x/y", "DENY") // must not panic
	want := `
# HELP ambit_ztunnel_authorization_decisions_total Inbound L4 authorization decisions, by decision, deciding policy (namespace/name, or none) and its action (ALLOW, DENY, or none).
# TYPE ambit_ztunnel_authorization_decisions_total counter
ambit_ztunnel_authorization_decisions_total{action="ALLOW",decision="allow",policy="ns1/allow-foo"} 1
ambit_ztunnel_authorization_decisions_total{action="ALLOW",decision="deny",policy="none"} 1
ambit_ztunnel_authorization_decisions_total{action="DENY",decision="deny",policy="ns1/deny-bar"} 2
ambit_ztunnel_authorization_decisions_total{action="none",decision="allow",policy="none"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), MetricAuthzDecisions); err != nil {
		t.Error(err)
	}
}
