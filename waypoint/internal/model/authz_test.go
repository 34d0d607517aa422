package model

import (
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"testing"
)

func TestAuthorize(t *testing.T) {
	get := Permission{Header: &RBACHeader{Name: ":method", Value: &ValueMatch{Value: "GET"}}}
	public := Permission{URLPath: &ValueMatch{Kind: ValuePrefix, Value: "/public"}}
	client := Principal{PeerPrincipal: &ValueMatch{Value: "spiffe://cluster.local/ns/demo/sa/client"}}
	opsNS := Principal{PeerPrincipal: &ValueMatch{Kind: ValueRegex, Regex: regexp.MustCompile(`^(?:spiffe://[^/]+/ns/ops/sa/[^/]+)$`)}}
	v4 := netip.MustParsePrefix("10.0.0.0/8")
	v6 := netip.MustParsePrefix("fd00::/64")
	any := Principal{Any: true}
	allow := RBAC{Action: RBACAllow, Policies: []RBACPolicy{{Name: "allow-get-public", Permissions: []Permission{{And: []Permission{get, public}}}, Principals: []Principal{client}}}}
	deny := RBAC{Action: RBACDeny, Policies: []RBACPolicy{
		{Name: "deny-debug", Permissions: []Permission{{Header: &RBACHeader{Name: "x-debug", Present: true}}}, Principals: []Principal{any}},
		{Name: "deny-nets", Permissions: []Permission{{Any: true}}, Principals: []Principal{{Or: []Principal{{RemoteIP: &v4}, {RemoteIP: &v6}}}}},
		{Name: "deny-not-8080", Permissions: []Permission{{Not: &Permission{Port: 8080}}}, Principals: []Principal{opsNS}},
	}}
	audit := RBAC{Action: RBACLog, Shadow: true, Policies: []RBACPolicy{{Name: "audit-all", Permissions: []Permission{{Any: true}}, Principals: []Principal{any}}}}

	req := func(f func(*Attributes)) Attributes {
		a := Attributes{HTTP: true, Method: "GET", Host: "web", Path: "/public/x", Header: http.Header{}, Port: 80,
			Principal: "spiffe://cluster.local/ns/demo/sa/client", SourceIP: netip.MustParseAddr("192.168.1.1")}
		if f != nil {
			f(&a)
		}
		return a
	}
	for _, tc := range []struct {
		name    string
		filters []RBAC
		a       Attributes
		allowed bool
		policy  string
		audited []string
	}{
		{name: "no filters", a: req(nil), allowed: true},
		{name: "allow match", filters: []RBAC{allow}, a: req(nil), allowed: true},
		{name: "allow: wrong method", filters: []RBAC{allow}, a: req(func(a *Attributes) { a.Method = "POST" }), policy: "none"},
		{name: "allow: wrong path", filters: []RBAC{allow}, a: req(func(a *Attributes) { a.Path = "/admin" }), policy: "none"},
		{name: "allow: other principal", filters: []RBAC{allow}, a: req(func(a *Attributes) { a.Principal = "spiffe://cluster.local/ns/demo/sa/other" }), policy: "none"},
		{name: "allow: no identity", filters: []RBAC{allow}, a: req(func(a *Attributes) { a.Principal = "" }), policy: "none"},
		{name: "allow without policies denies all", filters: []RBAC{{Action: RBACAllow}}, a: req(nil), policy: "none"},
		{name: "deny header present", filters: []RBAC{deny, allow}, a: req(func(a *Attributes) { a.Header.Set("X-Debug", "1") }), policy: "deny-debug"},
		{name: "deny IPv4 block", filters: []RBAC{deny, allow}, a: req(func(a *Attributes) { a.SourceIP = netip.MustParseAddr("10.1.2.3") }), policy: "deny-nets"},
		{name: "deny IPv6 block", filters: []RBAC{deny, allow}, a: req(func(a *Attributes) { a.SourceIP = netip.MustParseAddr("fd00::5") }), policy: "deny-nets"},
		{name: "deny IPv4-mapped source", filters: []RBAC{deny}, a: req(func(a *Attributes) { a.SourceIP = netip.MustParseAddr("::ffff:10.1.2.3") }), policy: "deny-nets"},
		{name: "deny namespace regex and not-port", filters: []RBAC{deny}, a: req(func(a *Attributes) { a.Principal = "spiffe://cluster.local/ns/ops/sa/x" }), policy: "deny-not-8080"},
		{name: "not-port excludes 8080", filters: []RBAC{deny}, a: req(func(a *Attributes) { a.Principal = "spiffe://cluster.local/ns/ops/sa/x"; a.Port = 8080 }), allowed: true},
		{name: "deny wins over allow", filters: []RBAC{deny, allow}, a: req(func(a *Attributes) { a.Header.Set("X-Debug", "") }), policy: "deny-debug"},
		{name: "audit logs and allows", filters: []RBAC{audit}, a: req(nil), allowed: true, audited: []string{"audit-all"}},
		{name: "audit before a denial", filters: []RBAC{audit, deny, allow}, a: req(func(a *Attributes) { a.Method = "PUT" }), policy: "none", audited: []string{"audit-all"}},
		{name: "TCP: headers never match", filters: []RBAC{deny}, a: Attributes{Port: 80, SourceIP: netip.MustParseAddr("192.168.1.1")}, allowed: true},
		{name: "TCP: allow path rule cannot match", filters: []RBAC{allow}, a: Attributes{Port: 80, Principal: "spiffe://cluster.local/ns/demo/sa/client"}, policy: "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Authorize(tc.filters, tc.a)
			if d.Allowed != tc.allowed || d.Policy != tc.policy || !slices.Equal(d.Audited, tc.audited) {
				t.Errorf("Authorize = %+v, want allowed=%v policy=%q audited=%v", d, tc.allowed, tc.policy, tc.audited)
			}
		})
	}
}

func TestValueMatch(t *testing.T) {
	for _, tc := range []struct {
		m    ValueMatch
		v    string
		want bool
	}{
		{ValueMatch{Value: "a"}, "a", true},
		{ValueMatch{Value: "a"}, "A", false},
		{ValueMatch{Value: "Web.Demo", IgnoreCase: true}, "web.demo", true},
		{ValueMatch{Kind: ValuePrefix, Value: "/api"}, "/api/x", true},
		{ValueMatch{Kind: ValueSuffix, Value: "/sa/web"}, "spiffe://td/ns/x/sa/web", true},
		{ValueMatch{Kind: ValueContains, Value: "ns/x"}, "spiffe://td/ns/x/sa/web", true},
		{ValueMatch{Kind: ValueSuffix, Value: "/sa/web"}, "spiffe://td/ns/x/sa/webx", false},
	} {
		if got := tc.m.Matches(tc.v); got != tc.want {
			t.Errorf("%+v.Matches(%q) = %v, want %v", tc.m, tc.v, got, tc.want)
		}
	}
}

func TestAccessLogLogs(t *testing.T) {
	al := &AccessLog{Sampled: 10, MinStatus: 400}
	for _, tc := range []struct {
		status int
		r      uint32
		want   bool
	}{{200, 5, true}, {200, 10, false}, {200, 99, false}, {403, 99, true}, {503, 50, true}} {
		if got := al.Logs(tc.status, tc.r); got != tc.want {
			t.Errorf("Logs(%d, %d) = %v, want %v", tc.status, tc.r, got, tc.want)
		}
	}
	if (&AccessLog{Sampled: 100}).Logs(200, 99) != true || (*AccessLog)(nil).Logs(500, 0) {
		t.Error("100% must log everything and no log nothing")
	}
}
