package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"testing"

	"ambit.dev/waypoint/internal/model"
)

// TestPlaintextEndpoint: an endpoint outside the mesh (a sidecar-era pod
// during a migration) is reached with a plain TCP connection, next to a
// mesh endpoint reached over HBONE, and requests to it are counted with
// an unknown destination principal.
func TestPlaintextEndpoint(t *testing.T) {
	m := newTestMesh(t)
	mesh := startBackend(t, m, "127.0.0.1", "mesh", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), echo)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Endpoint", "legacy")
		echo(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	cl := cluster("web", mesh)
	cl.Endpoints = append(cl.Endpoints, model.Endpoint{Destination: netip.MustParseAddrPort(ln.Addr().String()), Plaintext: true, Healthy: true, Workload: "legacy", Namespace: "demo"})
	tp := startProxy(t, m, httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cl))
	c := newClient(t, m, tp, vip)
	seen := map[string]int{}
	for range 4 {
		r := c.get(t, "http://web.demo.svc.cluster.local/x")
		if r.code != http.StatusOK {
			t.Fatalf("%d %q", r.code, r.body)
		}
		if r.header.Get("X-Endpoint") == "legacy" {
			seen["legacy"]++
		} else {
			seen["mesh"]++
		}
	}
	if seen["legacy"] != 2 || seen["mesh"] != 2 {
		t.Fatalf("answers %v, want round robin over both endpoints", seen)
	}
	if n := tp.metric(t, "istio_requests_total", map[string]string{"destination_workload": "legacy", "destination_principal": "unknown", "response_code": "200"}); n != 2 {
		t.Fatalf("requests to the plaintext endpoint counted %v, want 2", n)
	}
}
