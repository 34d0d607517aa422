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
				{Name: "gone", Match: model.RouteMatch{Prefix: "/v0/"}, Cluster: "outbound|80||old.demo.svc.cluster.local"},
				{Name: "default", Match: model.RouteMatch{Prefix: "/api/"}, Cluster: web.Name},
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
			d := Route(cfg, netip.MustParseAddrPort(tt.dst), tt.host, tt.path)
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
	if d := Route(nil, netip.MustParseAddrPort("10.96.0.10:80"), "web", "/"); d.Code != http.StatusServiceUnavailable {
		t.Fatalf("nil config: %+v", d)
	}
}
