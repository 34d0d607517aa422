package proxy

import (
	"net/http"
	"net/netip"
	"testing"

	"ambit.dev/waypoint/internal/model"
)

func TestRoute(t *testing.T) {
	web := &model.Cluster{Name: "outbound|80||web.demo.svc.cluster.local", Service: model.Service{Hostname: "web.demo.svc.cluster.local"}}
	cfg := &model.Config{
		Chains: []*model.Chain{
			{Name: "inbound-vip|80|http|web.demo.svc.cluster.local", Service: "web.demo.svc.cluster.local", Protocol: model.ProtocolHTTP, Port: 80,
				Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.10/32"), netip.MustParsePrefix("fd00:10:96::a/128")}, RouteName: "web:80"},
			{Name: "inbound-vip|81|http|late.demo.svc.cluster.local", Service: "late.demo.svc.cluster.local", Protocol: model.ProtocolHTTP, Port: 81,
				Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.10/32")}, RouteName: "late:81"},
			{Name: "inbound-vip|5432|tcp|db.demo.svc.cluster.local", Service: "db.demo.svc.cluster.local", Protocol: model.ProtocolTCP, Port: 5432,
				Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.11/32")}, Cluster: "outbound|5432||db.demo.svc.cluster.local"},
		},
		Clusters: map[string]*model.Cluster{web.Name: web},
		Routes: map[string]*model.RouteTable{"web:80": {Name: "web:80", VirtualHosts: []model.VirtualHost{{
			Name: "web", Domains: []string{"web.demo.svc.cluster.local", "10.96.0.10:80", "[fd00:10:96::a]:80"},
			Routes: []model.Route{
				{Name: "gone", Match: model.RouteMatch{Path: "/v0/"}, Cluster: "outbound|80||old.demo.svc.cluster.local"},
				{Name: "default", Match: model.RouteMatch{Path: "/api/"}, Cluster: web.Name},
			},
		}}}},
	}
	cfg.Index()
	tests := []struct {
		name, dst, host, path string
		code                  int // 0 = routed to web
		service               string
	}{
		{name: "IPv4 VIP by host name", dst: "10.96.0.10:80", host: "web.demo.svc.cluster.local", path: "/api/x", service: "web.demo.svc.cluster.local"},
		{name: "IPv6 VIP by VIP", dst: "[fd00:10:96::a]:80", host: "[fd00:10:96::a]:80", path: "/api/x", service: "web.demo.svc.cluster.local"},
		{name: "unknown host", dst: "10.96.0.10:80", host: "evil", path: "/api/x", code: http.StatusNotFound, service: "web.demo.svc.cluster.local"},
		{name: "no route", dst: "10.96.0.10:80", host: "web.demo.svc.cluster.local", path: "/other", code: http.StatusNotFound, service: "web.demo.svc.cluster.local"},
		{name: "route to a missing cluster", dst: "10.96.0.10:80", host: "web.demo.svc.cluster.local", path: "/v0/x", code: http.StatusServiceUnavailable, service: "web.demo.svc.cluster.local"},
		{name: "route table not received", dst: "10.96.0.10:81", host: "late", path: "/", code: http.StatusServiceUnavailable, service: "late.demo.svc.cluster.local"},
		{name: "chain gone", dst: "10.96.0.99:80", host: "web", path: "/", code: http.StatusServiceUnavailable},
		{name: "tcp chain", dst: "10.96.0.11:5432", host: "db", path: "/", code: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Route(cfg, netip.MustParseAddrPort(tt.dst), model.Request{Host: tt.host, Method: "GET", Path: tt.path}, 0)
			if d.Code != tt.code || d.Service != tt.service {
				t.Fatalf("Route = %+v, want code %d service %q", d, tt.code, tt.service)
			}
			if tt.code == 0 && (d.Cluster != web || d.Route.Name != "default") {
				t.Fatalf("routed to %+v by %+v", d.Cluster, d.Route)
			}
			if tt.code != 0 && d.Reason == "" {
				t.Fatal("a refusal without a reason")
			}
		})
	}
	if d := Route(nil, netip.MustParseAddrPort("10.96.0.10:80"), model.Request{Host: "web", Path: "/"}, 0); d.Code != http.StatusServiceUnavailable {
		t.Fatalf("nil config: %+v", d)
	}
}

func TestRouteActions(t *testing.T) {
	stable := &model.Cluster{Name: "stable", Service: model.Service{Hostname: "stable.demo.svc.cluster.local"}}
	canary := &model.Cluster{Name: "canary", Service: model.Service{Hostname: "canary.demo.svc.cluster.local"}}
	cfg := &model.Config{
		Chains: []*model.Chain{{Name: "inbound-vip|80|http|web.demo.svc.cluster.local", Service: "web.demo.svc.cluster.local", Protocol: model.ProtocolHTTP, Port: 80,
			Prefixes: []netip.Prefix{netip.MustParsePrefix("fd00:10:96::a/128")}, RouteName: "web:80"}},
		Clusters: map[string]*model.Cluster{stable.Name: stable, canary.Name: canary},
		Routes: map[string]*model.RouteTable{"web:80": {Name: "web:80", VirtualHosts: []model.VirtualHost{{
			Name: "web", Domains: []string{"web"},
			Routes: []model.Route{
				{Name: "redirect", Match: model.RouteMatch{Kind: model.PathExact, Path: "/old"}, Action: model.ActionRedirect, Redirect: &model.Redirect{Code: 302}},
				{Name: "broken", Match: model.RouteMatch{Kind: model.PathExact, Path: "/broken"}, Action: model.ActionDirect, DirectStatus: 500},
				{Name: "gone", Match: model.RouteMatch{Kind: model.PathExact, Path: "/gone"}, Action: model.ActionWeighted,
					WeightedClusters: []model.WeightedCluster{{Name: "stable", Weight: 1}, {Name: "missing", Weight: 1}}},
				{Name: "split", Match: model.RouteMatch{Path: "/"}, Action: model.ActionWeighted,
					WeightedClusters: []model.WeightedCluster{{Name: "stable", Weight: 90}, {Name: "canary", Weight: 10}}},
			},
		}}}},
	}
	cfg.Index()
	dst := netip.MustParseAddrPort("[fd00:10:96::a]:80")
	tests := []struct {
		name, path     string
		n              uint64
		code           int
		route, cluster string
		service        string
	}{
		{name: "redirect: no cluster", path: "/old", route: "redirect", service: "web.demo.svc.cluster.local"},
		{name: "direct response: no cluster", path: "/broken", route: "broken", service: "web.demo.svc.cluster.local"},
		{name: "weighted, low random", path: "/x", n: 3, route: "split", cluster: "stable", service: "stable.demo.svc.cluster.local"},
		{name: "weighted, high random", path: "/x", n: 195, route: "split", cluster: "canary", service: "canary.demo.svc.cluster.local"},
		{name: "weighted to a cluster not received", path: "/gone", n: 1, code: http.StatusServiceUnavailable, route: "gone", service: "web.demo.svc.cluster.local"},
		{name: "weighted to a received one", path: "/gone", n: 0, route: "gone", cluster: "stable", service: "stable.demo.svc.cluster.local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Route(cfg, dst, model.Request{Host: "web", Method: "GET", Path: tt.path}, tt.n)
			cl := ""
			if d.Cluster != nil {
				cl = d.Cluster.Name
			}
			if d.Code != tt.code || d.Route == nil || d.Route.Name != tt.route || cl != tt.cluster || d.Service != tt.service {
				t.Fatalf("Route = %+v (cluster %q), want code %d route %q cluster %q service %q", d, cl, tt.code, tt.route, tt.cluster, tt.service)
			}
		})
	}
}
