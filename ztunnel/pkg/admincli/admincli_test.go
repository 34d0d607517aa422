package admincli

import (
	"bytes"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/admin"
	"ambit.dev/ztunnel/pkg/adminapi"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// now is the fixed clock of every golden file.
var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

type fakeSource struct{ dump adminapi.ConfigDump }

func (f fakeSource) ConfigDump() adminapi.ConfigDump { return f.dump }
func (f fakeSource) Ready() error                    { return nil }

func fixtureDump() adminapi.ConfigDump {
	root := adminapi.CertInfo{Type: adminapi.CertRoot, Serial: "1f2e3d", Subject: "CN=Ambit root CA,O=cluster.local",
		NotBefore: now.Add(-365 * 24 * time.Hour), NotAfter: now.Add(9 * 365 * 24 * time.Hour)}
	return adminapi.ConfigDump{
		Node: "node1",
		Workloads: []adminapi.WorkloadDump{
			{UID: "pod-b", Name: "server", Namespace: "ns2", ServiceAccount: "sa2", Node: "node2", Protocol: "HBONE",
				MTLSMode: "STRICT", Status: "HEALTHY", Addresses: []string{"10.10.2.3", "fd00::2:3"},
				Services: map[string]map[string]uint32{"ns2/echo.ns2.svc.cluster.local": {"80": 8080}}, Waypoint: "10.10.3.9:15008"},
			{UID: "pod-a", Name: "client", Namespace: "ns1", ServiceAccount: "sa1", Node: "node1", Protocol: "HBONE",
				MTLSMode: "PERMISSIVE", Status: "HEALTHY", Addresses: []string{"10.10.1.2"}, Captured: true,
				AuthorizationPolicies: []string{"ns1/allow-frontend"}},
			{UID: "pod-c", Name: "legacy", Namespace: "ns1", ServiceAccount: "default", Node: "node1", Protocol: "NONE",
				MTLSMode: "PERMISSIVE", Status: "HEALTHY", Addresses: []string{"fd00::1:3"}},
		},
		Services: []adminapi.ServiceDump{
			{Name: "echo", Namespace: "ns2", Hostname: "echo.ns2.svc.cluster.local", VIPs: []string{"10.96.0.10", "fd00:96::10"},
				Ports: map[string]uint32{"443": 8443, "80": 8080, "9090": 9090}, Waypoint: "10.10.3.9:15008"},
			{Name: "db", Namespace: "ns1", Hostname: "db.ns1.svc.cluster.local", VIPs: []string{"10.96.0.20"},
				Ports: map[string]uint32{"5432": 5432}},
		},
		Policies: []adminapi.PolicyDump{
			{Name: "peerauthentication:strict", Namespace: "ns2", Scope: "NAMESPACE", Action: "PEER_AUTHENTICATION STRICT"},
			{Name: "allow-frontend", Namespace: "ns1", Scope: "WORKLOAD_SELECTOR", Action: "ALLOW", Rules: 2},
			{Name: "deny-untrusted", Namespace: "ambit-system", Scope: "GLOBAL", Action: "DENY", Rules: 1},
		},
		Certificates: []adminapi.CertDump{
			{Identity: "spiffe://cluster.local/ns/ns1/sa/sa1", State: adminapi.CertValid, Chain: []adminapi.CertInfo{
				{Type: adminapi.CertLeaf, Serial: "a1b2c3", Subject: "spiffe://cluster.local/ns/ns1/sa/sa1",
					NotBefore: now.Add(-time.Minute), NotAfter: now.Add(23*time.Hour + 59*time.Minute)},
				{Type: adminapi.CertIntermediate, Serial: "beef", Subject: "CN=Ambit intermediate CA,O=cluster.local",
					NotBefore: now.Add(-30 * 24 * time.Hour), NotAfter: now.Add(335 * 24 * time.Hour)},
				root,
			}},
			{Identity: "spiffe://cluster.local/ns/ns1/sa/old", State: adminapi.CertExpired, Chain: []adminapi.CertInfo{
				{Type: adminapi.CertLeaf, Serial: "dead", Subject: "spiffe://cluster.local/ns/ns1/sa/old",
					NotBefore: now.Add(-24*time.Hour - 5*time.Minute), NotAfter: now.Add(-5 * time.Minute)},
				root,
			}},
			{Identity: "spiffe://cluster.local/ns/ns1/sa/future", State: adminapi.CertNotYetValid, Chain: []adminapi.CertInfo{
				{Type: adminapi.CertLeaf, Serial: "f00d", Subject: "spiffe://cluster.local/ns/ns1/sa/future",
					NotBefore: now.Add(90 * time.Second), NotAfter: now.Add(24 * time.Hour)},
			}},
			{Identity: "spiffe://cluster.local/ns/ns2/sa/sa2", State: adminapi.CertPending, LastError: "CA unreachable"},
		},
		Connections: []adminapi.ConnDump{
			{ID: 2, Direction: "inbound", Protocol: "TCP", Src: "[fd00::9]:51000", Dst: "[fd00::1:3]:80",
				DstWorkload: "ns1/legacy", Opened: now.Add(-3 * time.Second), BytesSent: 512},
			{ID: 1, Direction: "outbound", Protocol: "HBONE", Src: "10.10.1.2:40000", Dst: "10.10.2.3:8080",
				SrcWorkload: "ns1/client", DstWorkload: "ns2/server",
				SrcPrincipal: "spiffe://cluster.local/ns/ns1/sa/sa1", DstPrincipal: "spiffe://cluster.local/ns/ns2/sa/sa2",
				Opened: now.Add(-5*time.Minute - 3*time.Second), BytesSent: 1536, BytesReceived: 3 << 20},
		},
	}
}

// run executes ztunnel-admin against addr with the fixed clock.
func run(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := NewCommand(Env{Out: &out, Now: func() time.Time { return now }})
	cmd.SetArgs(append([]string{"--admin-addr", addr}, args...))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestGolden(t *testing.T) {
	srv := httptest.NewServer(admin.AdminHandler(fakeSource{dump: fixtureDump()}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	empty := httptest.NewServer(admin.AdminHandler(fakeSource{}))
	defer empty.Close()
	emptyAddr := strings.TrimPrefix(empty.URL, "http://")

	tests := []struct {
		golden string
		addr   string
		args   []string
	}{
		{"certs", addr, []string{"certs"}},
		{"certs-json", addr, []string{"certs", "-o", "json"}},
		{"workloads", addr, []string{"workloads"}},
		{"workloads-json", addr, []string{"workloads", "-o", "json"}},
		{"services", addr, []string{"services", "-o", "table"}},
		{"services-json", addr, []string{"services", "--output=json"}},
		{"connections", addr, []string{"connections"}},
		{"connections-json", addr, []string{"connections", "-o", "json"}},
		{"workloads-empty", emptyAddr, []string{"workloads"}},
		{"policies", addr, []string{"policies"}},
		{"policies-json", addr, []string{"policies", "-o", "json"}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			got, err := run(t, tc.addr, tc.args...)
			if err != nil {
				t.Fatalf("ztunnel-admin %v: %v", tc.args, err)
			}
			path := filepath.Join("testdata", tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("ztunnel-admin %v output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", tc.args, path, got, want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	// A port nothing listens on: bind, note it, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("<html>hello</html>"))
	}))
	defer notJSON.Close()
	good := httptest.NewServer(admin.AdminHandler(fakeSource{dump: fixtureDump()}))
	defer good.Close()
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	tests := []struct {
		name    string
		addr    string
		args    []string
		wantErr string
	}{
		{"ztunnel not running", closed, []string{"certs"},
			"cannot reach ztunnel admin at " + closed + ": is ztunnel running on this node? the admin port only listens on loopback"},
		{"server error", host(broken), []string{"workloads"}, "answered 500 Internal Server Error to GET /workloads"},
		{"not the admin port", host(notJSON), []string{"connections"}, "is not ztunnel admin JSON (is --admin-addr the ztunnel admin port?)"},
		{"not the admin port, json output", host(notJSON), []string{"services", "-o", "json"}, "is not ztunnel admin JSON"},
		{"bad output format", host(good), []string{"certs", "-o", "yaml"}, `unknown output format "yaml": use -o table or -o json`},
		{"stray argument", host(good), []string{"certs", "extra"}, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.addr, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ztunnel-admin %v: err = %v, want it to contain %q", tc.args, err, tc.wantErr)
			}
			if out != "" {
				t.Errorf("ztunnel-admin %v printed %q on failure, want nothing", tc.args, out)
			}
		})
	}
}

func TestConfigDump(t *testing.T) {
	srv := httptest.NewServer(admin.AdminHandler(fakeSource{dump: fixtureDump()}))
	defer srv.Close()
	out, err := run(t, strings.TrimPrefix(srv.URL, "http://"), "config-dump")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"node": "node1"`) || !strings.Contains(out, `"certificates": [`) {
		t.Fatalf("config-dump output lacks the dump:\n%s", out)
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{45*time.Second + 900*time.Millisecond, "45s"},
		{5 * time.Minute, "5m"},
		{5*time.Minute + 3*time.Second, "5m3s"},
		{time.Hour, "1h"},
		{23*time.Hour + 59*time.Minute + 59*time.Second, "23h59m"},
		{47 * time.Hour, "47h"},
		{3*24*time.Hour + 4*time.Hour + 5*time.Minute, "3d4h"},
		{-5 * time.Minute, "5m"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := HumanDuration(tc.d); got != tc.want {
				t.Fatalf("HumanDuration(%s) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0B"},
		{1023, "1023B"},
		{1024, "1.0KiB"},
		{1536, "1.5KiB"},
		{3 << 20, "3.0MiB"},
		{5 << 30, "5.0GiB"},
		{2048 << 40, "2048.0TiB"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := HumanBytes(tc.n); got != tc.want {
				t.Fatalf("HumanBytes(%d) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
}
