package xdsclient

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"ambit.dev/pkg/deltaxds"
	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

// fakeConn stands for the gRPC connection; Apply never uses it.
type fakeConn struct{ grpc.ClientConnInterface }

type recorder struct {
	configs []*model.Config
	nonce   int
}

func (r *recorder) last() *model.Config { return r.configs[len(r.configs)-1] }

// resp builds a delta response; each resource's version is v.
func (r *recorder) resp(typeURL, v string, removed []string, ms ...proto.Message) *discovery.DeltaDiscoveryResponse {
	r.nonce++
	out := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, Nonce: fmt.Sprint(r.nonce), RemovedResources: removed}
	for _, m := range ms {
		var name string
		switch x := m.(type) {
		case interface{ GetClusterName() string }:
			name = x.GetClusterName()
		case interface{ GetName() string }:
			name = x.GetName()
		}
		out.Resources = append(out.Resources, &discovery.Resource{Name: name, Version: v, Resource: xdstest.Any(m)})
	}
	return out
}

func newClient(t *testing.T) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	node, err := NodeInfo{PodIPs: nil, PodName: "w", Namespace: "demo", Gateway: "demo/waypoint", ClusterDomain: "cluster.local"}.Node()
	if err == nil {
		t.Fatal("a node without pod IP was accepted")
	}
	node, err = NodeInfo{PodIPs: mustIPs("10.244.1.9"), PodName: "w", Namespace: "demo", Gateway: "demo/waypoint", ClusterDomain: "cluster.local"}.Node()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Node: node, TrustDomain: td, OnConfig: func(*model.Config) {}}); err == nil {
		t.Fatal("New accepted a config without connection")
	}
	c, err := New(Config{Conn: fakeConn{}, Node: node, TrustDomain: td, OnConfig: func(c *model.Config) { rec.configs = append(rec.configs, c) },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

// describe renders requests as "<type> ack|nack[: detail] +sub -unsub".
func describe(reqs []*discovery.DeltaDiscoveryRequest) []string {
	var out []string
	for _, r := range reqs {
		s := deltaxds.TypeName(r.GetTypeUrl())
		if r.GetResponseNonce() != "" {
			s += " ack"
			if r.GetErrorDetail() != nil {
				s += " NACK"
			}
		}
		for _, n := range r.GetResourceNamesSubscribe() {
			s += " +" + n
		}
		for _, n := range r.GetResourceNamesUnsubscribe() {
			s += " -" + n
		}
		out = append(out, s)
	}
	return out
}

func expect(t *testing.T, step string, got []*discovery.DeltaDiscoveryRequest, want ...string) {
	t.Helper()
	if d := describe(got); !slices.Equal(d, want) {
		t.Fatalf("%s: requests %q, want %q", step, d, want)
	}
}

func TestApplyFollowsReferencesAndNACKs(t *testing.T) {
	c, rec := newClient(t)
	web, db := xdstest.Example(), tcpService()
	svcs := []xdstest.Service{web, db}
	webC, dbC := web.ClusterName(), db.ClusterName()

	init := c.initialRequests()
	expect(t, "first connect", init, "Listener +*", "Cluster +*")
	if init[0].GetNode().GetId() != "waypoint~10.244.1.9~w.demo~demo.svc.cluster.local" || init[1].GetNode() != nil {
		t.Fatalf("node: %v / %v (only on the first request)", init[0].GetNode(), init[1].GetNode())
	}

	var ls []proto.Message
	for _, l := range xdstest.Listeners(td, svcs) {
		ls = append(ls, l)
	}
	expect(t, "LDS", c.Apply(rec.resp(TypeListener, "l1", nil, ls...)), "Listener ack", "RouteConfiguration +"+web.RouteName())
	var cs []proto.Message
	for _, cl := range xdstest.Clusters(td, svcs) {
		cs = append(cs, cl)
	}
	expect(t, "CDS", c.Apply(rec.resp(TypeCluster, "c1", nil, cs...)), "Cluster ack", "ClusterLoadAssignment +"+dbC+" +"+webC)
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "waiting for EDS "+dbC+", EDS "+webC+", RDS "+web.RouteName()) {
		t.Fatalf("Ready = %v", err)
	}
	expect(t, "EDS", c.Apply(rec.resp(TypeAssignment, "e1", nil, xdstest.Assignment(web), xdstest.Assignment(db))), "ClusterLoadAssignment ack")
	expect(t, "RDS", c.Apply(rec.resp(TypeRoute, "r1", nil, xdstest.Route(web))), "RouteConfiguration ack")
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready after a complete config: %v", err)
	}
	if cfg := rec.last(); !cfg.Complete() || len(cfg.Clusters[webC].Endpoints) != 2 || cfg.Versions["Cluster/"+webC] != "c1" {
		t.Fatalf("config: %+v", cfg)
	}

	// A cluster the waypoint cannot honour is NACKed; its previous
	// version stays, the rest of the response applies.
	bad := xdstest.Cluster(db)
	bad.LbPolicy = clusterv3.Cluster_MAGLEV
	web2 := xdstest.Cluster(web)
	web2.ConnectTimeout.Seconds = 3
	reqs := c.Apply(rec.resp(TypeCluster, "c2", nil, bad, web2))
	expect(t, "bad CDS", reqs, "Cluster ack NACK")
	detail := reqs[0].GetErrorDetail().GetMessage()
	if !strings.Contains(detail, `Cluster "`+dbC+`"`) || !strings.Contains(detail, "lb_policy MAGLEV is not supported yet") || !strings.Contains(detail, "previous versions kept") {
		t.Fatalf("NACK detail %q does not say which resource and why", detail)
	}
	cfg := rec.last()
	if !cfg.Complete() || cfg.Versions["Cluster/"+dbC] != "c1" || cfg.Versions["Cluster/"+webC] != "c2" || cfg.Clusters[webC].ConnectTimeout.Seconds() != 3 {
		t.Fatalf("after the NACK: versions %v, web timeout %s", cfg.Versions, cfg.Clusters[webC].ConnectTimeout)
	}

	// An assignment nobody subscribed to is ignored.
	stray := xdstest.Service{Name: "stray", Namespace: "demo", Port: 1, Protocol: "tcp"}
	expect(t, "stray EDS", c.Apply(rec.resp(TypeAssignment, "e2", nil, xdstest.Assignment(stray))), "ClusterLoadAssignment ack")
	if _, ok := rec.last().Versions["ClusterLoadAssignment/"+stray.ClusterName()]; ok {
		t.Fatal("an unsubscribed assignment was kept")
	}

	// Removing a cluster unsubscribes its assignment; the chain that
	// still references it makes the config incomplete (served anyway).
	expect(t, "CDS removal", c.Apply(rec.resp(TypeCluster, "", []string{dbC})), "Cluster ack", "ClusterLoadAssignment -"+dbC)
	cfg = rec.last()
	if cfg.Clusters[dbC] != nil || !slices.Equal(cfg.Missing, []string{"CDS " + dbC}) {
		t.Fatalf("after removal: clusters %v, missing %v", cfg.Clusters, cfg.Missing)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready went false after an update: %v", err)
	}

	// Reconnecting lists what is held and re-subscribes by name.
	init = c.initialRequests()
	expect(t, "reconnect", init, "Listener +*", "Cluster +*", "ClusterLoadAssignment +"+webC, "RouteConfiguration +"+web.RouteName())
	if v := init[2].GetInitialResourceVersions(); len(v) != 1 || v[webC] != "e1" {
		t.Fatalf("EDS initial versions %v", v)
	}
	if v := init[0].GetInitialResourceVersions(); len(v) != 3 || v["main_internal"] != "l1" {
		t.Fatalf("LDS initial versions %v", v)
	}

	// Protocol errors.
	reqs = c.Apply(&discovery.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Secret", Nonce: "x"})
	expect(t, "unknown type", reqs, "Secret ack NACK")
	mismatch := rec.resp(TypeCluster, "c3", nil, xdstest.Route(web))
	mismatch.Resources[0].Name = "outbound|1||x"
	reqs = c.Apply(mismatch)
	if expect(t, "body of another type", reqs, "Cluster ack NACK"); !strings.Contains(reqs[0].GetErrorDetail().GetMessage(), "not a") {
		t.Fatalf("detail %q", reqs[0].GetErrorDetail().GetMessage())
	}
}

func mustIPs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}
