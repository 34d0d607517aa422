package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/model"
)

// TestConfigWait: a CONNECT to a Service the waypoint's configuration does
// not have yet (the client's ztunnel learnt of the binding first) waits
// for the configuration that has it and is served; one that never comes
// is refused with 400 once the wait is over.
func TestConfigWait(t *testing.T) {
	m := newTestMesh(t)
	web := startBackend(t, m, "127.0.0.1", "web-1", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), echo)
	full := httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cluster("web", web))
	// The same waypoint before the binding: another Service only.
	before := httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cluster("web", web))
	before.Chains[0].Prefixes = []netip.Prefix{netip.MustParsePrefix("10.96.0.99/32")}
	tp := startProxy(t, m, before)

	src := mustID(t, "spiffe://cluster.local/ns/demo/sa/client")
	d, err := hbone.NewDialer(hbone.DialerConfig{
		Certificate: func(context.Context, identity.ID) (*tls.Certificate, error) { return m.cert(src) },
		Roots:       m.ca.Roots, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// dial opens a stream to the web VIP and sends one GET on it.
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := d.Dial(ctx, hbone.Target{SourceID: src, DestID: tp.id, HBONEAddr: tp.addr, Authority: vip})
		if err != nil {
			return err
		}
		defer c.Close()
		req, _ := http.NewRequest(http.MethodGet, "http://web.demo.svc.cluster.local/", nil)
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET: %d %s", resp.StatusCode, body)
		}
		return nil
	}

	// pushLater sets cfg while a CONNECT waits.
	pushLater := func(cfg *model.Config) chan struct{} {
		pushed := make(chan struct{})
		go func() {
			defer close(pushed)
			time.Sleep(200 * time.Millisecond)
			cfg.Index()
			tp.p.SetConfig(cfg)
		}()
		return pushed
	}
	// The binding reaches the waypoint while the CONNECT waits.
	pushed := pushLater(full)
	if err := dial(); err != nil {
		t.Fatalf("CONNECT during the binding: %v", err)
	}
	<-pushed
	// The chain came (LDS) but not its route table (RDS): the CONNECT
	// waits for it too, as Envoy warms such a listener.
	noRoutes := httpConfig(nil, cluster("web", web))
	noRoutes.Routes = nil
	noRoutes.Index()
	tp.p.SetConfig(noRoutes)
	pushed = pushLater(httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cluster("web", web)))
	if err := dial(); err != nil {
		t.Fatalf("CONNECT while the route table is missing: %v", err)
	}
	<-pushed

	// Unbound again, and nothing comes: 400 after the wait.
	before.Index()
	tp.p.SetConfig(before)
	var se *hbone.StatusError
	if err := dial(); !errors.As(err, &se) || se.Code != http.StatusBadRequest || !strings.Contains(se.Reason, "unknown destination") {
		t.Fatalf("CONNECT to an unbound Service: %v, want 400 unknown destination", err)
	}
}
