package model

import (
	"net/netip"
	"testing"

	"ambit.dev/pkg/identity"
)

func TestChain(t *testing.T) {
	chain := func(name string, port uint16, prefixes ...string) *Chain {
		c := &Chain{Name: name, Port: port, Protocol: ProtocolHTTP}
		for _, p := range prefixes {
			c.Prefixes = append(c.Prefixes, netip.MustParsePrefix(p))
		}
		return c
	}
	cfg := &Config{Chains: []*Chain{
		chain("web", 80, "10.96.0.10/32", "fd00:10:96::a/128"),
		chain("pods", 80, "10.244.0.0/16", "fd00:10:244::/48"),
		chain("pod", 80, "10.244.1.5/32", "fd00:10:244:2::7/128"),
		chain("db", 5432, "10.96.0.11/32"),
	}}
	cfg.Index()
	tests := []struct{ dst, want string }{
		{"10.96.0.10:80", "web"},
		{"[fd00:10:96::a]:80", "web"},
		{"[::ffff:10.96.0.10]:80", "web"},
		{"10.96.0.10:8080", ""},
		{"10.96.0.11:5432", "db"},
		{"10.244.1.5:80", "pod"},
		{"[fd00:10:244:2::7]:80", "pod"},
		{"10.244.9.9:80", "pods"},
		{"[fd00:10:244:9::9]:80", "pods"},
		{"10.245.0.1:80", ""},
		{"[fd00:10:245::1]:80", ""},
	}
	for _, tt := range tests {
		t.Run(tt.dst, func(t *testing.T) {
			got := ""
			if c := cfg.Chain(netip.MustParseAddrPort(tt.dst)); c != nil {
				got = c.Name
			}
			if got != tt.want {
				t.Fatalf("Chain(%s) = %q, want %q", tt.dst, got, tt.want)
			}
		})
	}
	if (*Config)(nil).Chain(netip.MustParseAddrPort("10.96.0.10:80")) != nil {
		t.Fatal("a nil config has chains")
	}
}

func TestSelect(t *testing.T) {
	rt := &RouteTable{Name: "web:80", VirtualHosts: []VirtualHost{
		{Name: "web", Domains: []string{"web.demo.svc.cluster.local", "web.demo.svc.cluster.local:80", "10.96.0.10:80", "[fd00:10:96::a]:80"}, Routes: []Route{
			{Name: "admin", Match: RouteMatch{Kind: PathExact, Path: "/admin", IgnoreCase: true}, Cluster: "admin"},
			{Name: "api", Match: RouteMatch{Path: "/api/"}, Cluster: "api"},
			{Name: "default", Match: RouteMatch{Path: "/"}, Cluster: "web"},
		}},
		{Name: "suffix", Domains: []string{"*.example.com"}, Routes: []Route{{Name: "s", Match: RouteMatch{Path: "/"}, Cluster: "suffix"}}},
		{Name: "longer-suffix", Domains: []string{"*.api.example.com"}, Routes: []Route{{Name: "ls", Match: RouteMatch{Path: "/"}, Cluster: "longer"}}},
		{Name: "prefix", Domains: []string{"legacy.*"}, Routes: []Route{{Name: "p", Match: RouteMatch{Path: "/only"}, Cluster: "prefix"}}},
	}}
	tests := []struct {
		name, host, path string
		wantVH, want     string // "" = none
	}{
		{"host name", "web.demo.svc.cluster.local", "/", "web", "web"},
		{"host name any case, with port", "WEB.demo.svc.cluster.local:80", "/x", "web", "web"},
		{"IPv4 VIP with port", "10.96.0.10:80", "/api/v1", "web", "api"},
		{"IPv6 VIP with port", "[fd00:10:96::a]:80", "/api/v1", "web", "api"},
		{"IPv4 VIP without port is not listed", "10.96.0.10", "/", "", ""},
		{"exact path any case", "web.demo.svc.cluster.local", "/ADMIN", "web", "admin"},
		{"exact path is not a prefix", "web.demo.svc.cluster.local", "/admin/x", "web", "web"},
		{"prefix is case sensitive", "web.demo.svc.cluster.local", "/API/v1", "web", "web"},
		{"suffix wildcard", "a.example.com", "/", "suffix", "suffix"},
		{"longest suffix wins", "v1.api.example.com", "/", "longer-suffix", "longer"},
		{"wildcard needs a label", ".example.com", "/", "", ""},
		{"prefix wildcard", "legacy.corp", "/only/this", "prefix", "prefix"},
		{"virtual host without matching route", "legacy.corp", "/other", "prefix", ""},
		{"unknown host", "other.demo", "/", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vh, r := rt.Select(Request{Host: tt.host, Method: "GET", Path: tt.path})
			gotVH, got := "", ""
			if vh != nil {
				gotVH = vh.Name
			}
			if r != nil {
				got = r.Cluster
			}
			if gotVH != tt.wantVH || got != tt.want {
				t.Fatalf("Select(%q, %q) = %q, %q; want %q, %q", tt.host, tt.path, gotVH, got, tt.wantVH, tt.want)
			}
		})
	}
	star := &RouteTable{VirtualHosts: []VirtualHost{{Name: "any", Domains: []string{"*"}, Routes: []Route{{Match: RouteMatch{Path: "/"}, Cluster: "c"}}}}}
	if vh, r := star.Select(Request{Host: "whatever:80", Path: "/"}); vh == nil || r == nil {
		t.Fatal(`"*" does not match`)
	}
}

func TestPick(t *testing.T) {
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "web"}
	ep := func(dst string, healthy bool) Endpoint {
		d := netip.MustParseAddrPort(dst)
		return Endpoint{Tunnel: netip.AddrPortFrom(d.Addr(), 15008), Destination: d, Identity: id, Healthy: healthy}
	}
	tests := []struct {
		name string
		eps  []Endpoint
		want []string // picks for n = 0, 1, 2, 3
	}{
		{name: "IPv4 round robin", eps: []Endpoint{ep("10.244.1.5:8080", true), ep("10.244.2.7:8080", true)},
			want: []string{"10.244.1.5:8080", "10.244.2.7:8080", "10.244.1.5:8080", "10.244.2.7:8080"}},
		{name: "IPv6, unhealthy skipped", eps: []Endpoint{ep("[fd00::1]:8080", false), ep("[fd00::2]:8080", true), ep("[fd00::3]:8080", true)},
			want: []string{"[fd00::2]:8080", "[fd00::3]:8080", "[fd00::2]:8080", "[fd00::3]:8080"}},
		{name: "none healthy", eps: []Endpoint{ep("10.244.1.5:8080", false)}, want: []string{"", "", "", ""}},
		{name: "no endpoints", want: []string{"", "", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for n, want := range tt.want {
				e, ok := Pick(tt.eps, uint64(n))
				got := ""
				if ok {
					got = e.Destination.String()
				}
				if got != want {
					t.Fatalf("Pick(n=%d) = %q, want %q", n, got, want)
				}
			}
		})
	}
}

func TestPickOther(t *testing.T) {
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "web"}
	ep := func(dst string, healthy bool) Endpoint {
		d := netip.MustParseAddrPort(dst)
		return Endpoint{Tunnel: netip.AddrPortFrom(d.Addr(), 15008), Destination: d, Identity: id, Healthy: healthy}
	}
	a, b, c := "10.244.1.5:8080", "[fd00::2]:8080", "10.244.2.7:8080"
	three := []Endpoint{ep(a, true), ep(b, true), ep(c, true)}
	tests := []struct {
		name  string
		eps   []Endpoint
		tried []string
		want  []string // picks for n = 0, 1, 2
	}{
		{name: "first attempt is round robin", eps: three, want: []string{a, b, c}},
		{name: "avoids the tried IPv4 endpoint", eps: three, tried: []string{a}, want: []string{b, c, b}},
		{name: "avoids the tried IPv6 endpoint", eps: three, tried: []string{b}, want: []string{a, c, a}},
		{name: "avoids every tried endpoint", eps: three, tried: []string{a, c}, want: []string{b, b, b}},
		{name: "all tried: not the last one", eps: three, tried: []string{a, b, c}, want: []string{a, b, a}},
		{name: "only one healthy: that one again", eps: []Endpoint{ep(a, true), ep(b, false)}, tried: []string{a}, want: []string{a, a, a}},
		{name: "unhealthy never picked", eps: []Endpoint{ep(a, true), ep(b, false), ep(c, true)}, tried: []string{a}, want: []string{c, c, c}},
		{name: "none healthy", eps: []Endpoint{ep(a, false)}, tried: []string{a}, want: []string{"", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tried []netip.AddrPort
			for _, s := range tt.tried {
				tried = append(tried, netip.MustParseAddrPort(s))
			}
			for n, want := range tt.want {
				e, ok := PickOther(tt.eps, uint64(n), tried)
				got := ""
				if ok {
					got = e.Destination.String()
				}
				if got != want {
					t.Fatalf("PickOther(n=%d, tried %v) = %q, want %q", n, tt.tried, got, want)
				}
			}
		})
	}
}
