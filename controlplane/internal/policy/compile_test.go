package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const root = "ambit-system"

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Shorthands for the spec types.
type (
	apSpec = securityv1alpha1.AuthorizationPolicySpec
	paSpec = securityv1alpha1.PeerAuthenticationSpec
	src    = securityv1alpha1.Source
	op     = securityv1alpha1.Operation
)

func meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 7, CreationTimestamp: metav1.NewTime(t0)}
}

func apObj(ns, name string, spec apSpec) *securityv1alpha1.AuthorizationPolicy {
	return &securityv1alpha1.AuthorizationPolicy{ObjectMeta: meta(ns, name), Spec: spec}
}

func paObj(ns, name string, spec paSpec) *securityv1alpha1.PeerAuthentication {
	return &securityv1alpha1.PeerAuthentication{ObjectMeta: meta(ns, name), Spec: spec}
}

func sel(kv ...string) *securityv1alpha1.WorkloadSelector {
	s := &securityv1alpha1.WorkloadSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func from(sources ...src) []securityv1alpha1.RuleFrom {
	var out []securityv1alpha1.RuleFrom
	for _, s := range sources {
		out = append(out, securityv1alpha1.RuleFrom{Source: s})
	}
	return out
}

func to(ops ...op) []securityv1alpha1.RuleTo {
	var out []securityv1alpha1.RuleTo
	for _, o := range ops {
		out = append(out, securityv1alpha1.RuleTo{Operation: o})
	}
	return out
}

// Proto builders.

func exact(s string) *workloadv1alpha1.StringMatch {
	return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *workloadv1alpha1.StringMatch {
	return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Prefix{Prefix: s}}
}

func suffix(s string) *workloadv1alpha1.StringMatch {
	return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Suffix{Suffix: s}}
}

func presence() *workloadv1alpha1.StringMatch {
	return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Presence{Presence: &workloadv1alpha1.Presence{}}}
}

func ipp(s string) *workloadv1alpha1.IPPrefix {
	p := netip.MustParsePrefix(s)
	return &workloadv1alpha1.IPPrefix{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

func rule(clauses ...*workloadv1alpha1.Clause) *workloadv1alpha1.Rule {
	return &workloadv1alpha1.Rule{Clauses: clauses}
}

func clause(ms ...*workloadv1alpha1.Match) *workloadv1alpha1.Clause {
	return &workloadv1alpha1.Clause{Matches: ms}
}

func auth(ns, name string, sc workloadv1alpha1.Scope, action workloadv1alpha1.Action, rules ...*workloadv1alpha1.Rule) *workloadv1alpha1.Authorization {
	return &workloadv1alpha1.Authorization{Name: name, Namespace: ns, Scope: sc, Action: action, Rules: rules}
}

func denyAllAuth(ns, name string, sc workloadv1alpha1.Scope) *workloadv1alpha1.Authorization {
	return auth(ns, name, sc, workloadv1alpha1.Action_DENY, rule())
}

func paAuth(ns, name string, sc workloadv1alpha1.Scope, mode workloadv1alpha1.MTLSMode, ports map[uint32]workloadv1alpha1.MTLSMode) *workloadv1alpha1.Authorization {
	return &workloadv1alpha1.Authorization{
		Name: "peerauthentication:" + name, Namespace: ns, Scope: sc,
		PeerAuthentication: &workloadv1alpha1.PeerAuthentication{Mode: mode, PortLevelMtls: ports},
	}
}

const (
	nsScope  = workloadv1alpha1.Scope_NAMESPACE
	selScope = workloadv1alpha1.Scope_WORKLOAD_SELECTOR
	global   = workloadv1alpha1.Scope_GLOBAL
	allow    = workloadv1alpha1.Action_ALLOW
	deny     = workloadv1alpha1.Action_DENY
	audit    = workloadv1alpha1.Action_AUDIT
)

// checkCondition checks the parts of the Accepted condition every compiled
// object must get right.
func checkCondition(t *testing.T, c metav1.Condition, wantReason string) {
	t.Helper()
	if c.Type != securityv1alpha1.ConditionAccepted {
		t.Errorf("condition type %q, want %q", c.Type, securityv1alpha1.ConditionAccepted)
	}
	if c.Reason != wantReason {
		t.Errorf("reason %q, want %q (message %q)", c.Reason, wantReason, c.Message)
	}
	wantStatus := metav1.ConditionFalse
	if wantReason == securityv1alpha1.ReasonAccepted {
		wantStatus = metav1.ConditionTrue
	}
	if c.Status != wantStatus {
		t.Errorf("status %q, want %q", c.Status, wantStatus)
	}
	if c.ObservedGeneration != 7 {
		t.Errorf("observedGeneration %d, want the object's generation 7", c.ObservedGeneration)
	}
	if !c.LastTransitionTime.IsZero() {
		t.Errorf("lastTransitionTime %v, want zero (set by the status writer)", c.LastTransitionTime)
	}
	if c.Message == "" {
		t.Error("empty message")
	}
}

func TestCompileScope(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ns         string
		selector   *securityv1alpha1.WorkloadSelector
		wantScope  workloadv1alpha1.Scope
		wantLabels map[string]string
		wantAll    bool
	}{
		{name: "namespace without selector", ns: "shop", wantScope: nsScope},
		{name: "root namespace without selector is global", ns: root, wantScope: global},
		{name: "selector", ns: "shop", selector: sel("app", "web", "tier", "fe"), wantScope: selScope, wantLabels: map[string]string{"app": "web", "tier": "fe"}},
		{name: "selector with empty matchLabels", ns: "shop", selector: sel(), wantScope: selScope, wantLabels: map[string]string{}},
		{name: "selector in root namespace selects all namespaces", ns: root, selector: sel("app", "web"), wantScope: selScope, wantLabels: map[string]string{"app": "web"}, wantAll: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []Compiled{
				CompileAuthorizationPolicy(apObj(tc.ns, "p", apSpec{Selector: tc.selector}), root),
				CompilePeerAuthentication(paObj(tc.ns, "p", paSpec{Selector: tc.selector}), root),
			} {
				t.Run(c.Ref.Kind.String(), func(t *testing.T) {
					if c.Scope != tc.wantScope || c.Authorization.GetScope() != tc.wantScope {
						t.Errorf("scope %v, authorization scope %v, want %v", c.Scope, c.Authorization.GetScope(), tc.wantScope)
					}
					if diff := cmp.Diff(tc.wantLabels, c.Selector); diff != "" || (tc.wantLabels == nil) != (c.Selector == nil) {
						t.Errorf("selector %#v, want %#v", c.Selector, tc.wantLabels)
					}
					if c.AllNamespaces != tc.wantAll {
						t.Errorf("AllNamespaces %v, want %v", c.AllNamespaces, tc.wantAll)
					}
					if c.Ref.Namespace != tc.ns || c.Ref.Name != "p" {
						t.Errorf("ref %v", c.Ref)
					}
					wantName := tc.ns + "/p"
					if c.Ref.Kind == KindPeerAuthentication {
						wantName = tc.ns + "/peerauthentication:p"
					}
					if c.ResourceName != wantName {
						t.Errorf("resource name %q, want %q", c.ResourceName, wantName)
					}
					if !c.Created.Equal(t0) {
						t.Errorf("created %v, want %v", c.Created, t0)
					}
					checkCondition(t, c.Condition, securityv1alpha1.ReasonAccepted)
					mustPassZtunnel(t, c)
				})
			}
		})
	}
}

func TestCompileAuthorizationPolicyValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec apSpec
		want *workloadv1alpha1.Authorization
	}{
		{
			name: "empty spec allows nothing",
			want: auth("shop", "p", nsScope, allow),
		},
		{
			name: "explicit ALLOW",
			spec: apSpec{Action: securityv1alpha1.ActionAllow, Rules: []securityv1alpha1.Rule{{}}},
			want: auth("shop", "p", nsScope, allow, rule()),
		},
		{
			name: "DENY",
			spec: apSpec{Action: securityv1alpha1.ActionDeny, Rules: []securityv1alpha1.Rule{{To: to(op{Ports: []string{"22"}})}}},
			want: auth("shop", "p", nsScope, deny, rule(clause(&workloadv1alpha1.Match{DestinationPorts: []uint32{22}}))),
		},
		{
			name: "AUDIT",
			spec: apSpec{Action: securityv1alpha1.ActionAudit, Rules: []securityv1alpha1.Rule{{}}},
			want: auth("shop", "p", nsScope, audit, rule()),
		},
		{
			name: "empty rule matches everything",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{}}},
			want: auth("shop", "p", nsScope, allow, rule()),
		},
		{
			name: "principals exact prefix suffix presence",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{Principals: []string{
				"cluster.local/ns/shop/sa/web", "cluster.local/ns/shop/*", "*/sa/web", "*",
			}})}}},
			want: auth("shop", "p", nsScope, allow, rule(clause(&workloadv1alpha1.Match{Principals: []*workloadv1alpha1.StringMatch{
				exact("cluster.local/ns/shop/sa/web"), prefix("cluster.local/ns/shop/"), suffix("/sa/web"), presence(),
			}}))),
		},
		{
			name: "notPrincipals presence matches plaintext",
			spec: apSpec{Action: securityv1alpha1.ActionDeny, Rules: []securityv1alpha1.Rule{{From: from(src{NotPrincipals: []string{"*"}})}}},
			want: auth("shop", "p", nsScope, deny, rule(clause(&workloadv1alpha1.Match{NotPrincipals: []*workloadv1alpha1.StringMatch{presence()}}))),
		},
		{
			name: "namespaces and notNamespaces",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{Namespaces: []string{"team-*", "shop"}, NotNamespaces: []string{"*-test"}})}}},
			want: auth("shop", "p", nsScope, allow, rule(clause(&workloadv1alpha1.Match{
				Namespaces:    []*workloadv1alpha1.StringMatch{prefix("team-"), exact("shop")},
				NotNamespaces: []*workloadv1alpha1.StringMatch{suffix("-test")},
			}))),
		},
		{
			name: "ipBlocks IPv4 and IPv6 addresses and CIDRs",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{IPBlocks: []string{"10.0.0.7", "10.1.0.0/16", "fd00::1", "fd00:1::/64", "0.0.0.0/0", "::/0"}})}}},
			want: auth("shop", "p", nsScope, allow, rule(clause(&workloadv1alpha1.Match{SourceIps: []*workloadv1alpha1.IPPrefix{
				ipp("10.0.0.7/32"), ipp("10.1.0.0/16"), ipp("fd00::1/128"), ipp("fd00:1::/64"), ipp("0.0.0.0/0"), ipp("::/0"),
			}}))),
		},
		{
			name: "notIpBlocks with host bits are masked",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{NotIPBlocks: []string{"192.168.1.77/24", "2001:db8::1/32"}})}}},
			want: auth("shop", "p", nsScope, allow, rule(clause(&workloadv1alpha1.Match{NotSourceIps: []*workloadv1alpha1.IPPrefix{
				ipp("192.168.1.0/24"), ipp("2001:db8::/32"),
			}}))),
		},
		{
			name: "IPv4-mapped IPv6 blocks are sent as IPv4",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{IPBlocks: []string{"::ffff:10.0.0.7", "::ffff:10.2.0.0/112"}})}}},
			want: auth("shop", "p", nsScope, allow, rule(clause(&workloadv1alpha1.Match{SourceIps: []*workloadv1alpha1.IPPrefix{
				ipp("10.0.0.7/32"), ipp("10.2.0.0/16"),
			}}))),
		},
		{
			name: "ports and notPorts",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{To: to(op{Ports: []string{"1", "8080", "65535"}}, op{NotPorts: []string{"0443"}})}}},
			want: auth("shop", "p", nsScope, allow, rule(clause(
				&workloadv1alpha1.Match{DestinationPorts: []uint32{1, 8080, 65535}},
				&workloadv1alpha1.Match{NotDestinationPorts: []uint32{443}},
			))),
		},
		{
			name: "from and to are two AND'ed clauses; sources are OR'ed matches; fields AND'ed in one match",
			spec: apSpec{Rules: []securityv1alpha1.Rule{
				{
					From: from(
						src{Principals: []string{"cluster.local/ns/a/sa/x"}, IPBlocks: []string{"10.0.0.0/8"}},
						src{Namespaces: []string{"b"}, NotIPBlocks: []string{"fd00::/8"}},
					),
					To: to(op{Ports: []string{"80"}, NotPorts: []string{"81"}}),
				},
				{From: from(src{NotNamespaces: []string{"c"}, NotPrincipals: []string{"*/sa/bad"}})},
			}},
			want: auth("shop", "p", nsScope, allow,
				rule(
					clause(
						&workloadv1alpha1.Match{Principals: []*workloadv1alpha1.StringMatch{exact("cluster.local/ns/a/sa/x")}, SourceIps: []*workloadv1alpha1.IPPrefix{ipp("10.0.0.0/8")}},
						&workloadv1alpha1.Match{Namespaces: []*workloadv1alpha1.StringMatch{exact("b")}, NotSourceIps: []*workloadv1alpha1.IPPrefix{ipp("fd00::/8")}},
					),
					clause(&workloadv1alpha1.Match{DestinationPorts: []uint32{80}, NotDestinationPorts: []uint32{81}}),
				),
				rule(clause(&workloadv1alpha1.Match{
					NotPrincipals: []*workloadv1alpha1.StringMatch{suffix("/sa/bad")},
					NotNamespaces: []*workloadv1alpha1.StringMatch{exact("c")},
				})),
			),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := CompileAuthorizationPolicy(apObj("shop", "p", tc.spec), root)
			if diff := cmp.Diff(tc.want, c.Authorization, protocmp.Transform()); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
			checkCondition(t, c.Condition, securityv1alpha1.ReasonAccepted)
			if c.Condition.Message != MessageAccepted {
				t.Errorf("message %q, want %q", c.Condition.Message, MessageAccepted)
			}
			mustPassZtunnel(t, c)
		})
	}
}

func TestCompileAuthorizationPolicyInvalid(t *testing.T) {
	denyAllShop := denyAllAuth("shop", "p", nsScope)
	for _, tc := range []struct {
		name       string
		spec       apSpec
		want       *workloadv1alpha1.Authorization
		wantReason string
		wantMsg    []string // substrings, in order
	}{
		{
			name:       "unknown action fails closed",
			spec:       apSpec{Action: "LOG"},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{`action: "LOG" is not one of ALLOW, DENY, AUDIT`, "ztunnel denies every connection"},
		},
		{
			name:       "empty source",
			spec:       apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{"rules[0].from[0].source: must set at least one field"},
		},
		{
			name:       "empty operation",
			spec:       apSpec{Rules: []securityv1alpha1.Rule{{To: to(op{Ports: []string{"80"}}, op{})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{"rules[0].to[1].operation: must set at least one field"},
		},
		{
			name:       "principal with spiffe scheme",
			spec:       apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{Principals: []string{"spiffe://cluster.local/ns/a/sa/b"}})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{`rules[0].from[0].source.principals[0]: "spiffe://cluster.local/ns/a/sa/b": write principals without the spiffe:// scheme, e.g. "cluster.local/ns/a/sa/b"`},
		},
		{
			name: "bad wildcards and empty strings",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{From: from(src{
				Principals:    []string{"cluster.local/*/sa/x"},
				NotPrincipals: []string{"*a*"},
				Namespaces:    []string{""},
				NotNamespaces: []string{"**"},
			})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg: []string{
				`rules[0].from[0].source.principals[0]: "cluster.local/*/sa/x": use at most one '*', only at the start or the end`,
				`rules[0].from[0].source.notPrincipals[0]: "*a*"`,
				`rules[0].from[0].source.namespaces[0]: must not be empty`,
				`rules[0].from[0].source.notNamespaces[0]: "**"`,
			},
		},
		{
			name: "bad ipBlocks",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{}, {From: from(src{
				IPBlocks:    []string{"10.0.0.0/8", "fd00::/8", "10.0.0.0/33", "fd00::/129"},
				NotIPBlocks: []string{"example.com", "fe80::1%eth0", "::ffff:0.0.0.0/80"},
			})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg: []string{
				`rules[1].from[0].source.ipBlocks[2]: "10.0.0.0/33" is not an IP address or CIDR block`,
				`rules[1].from[0].source.ipBlocks[3]: "fd00::/129" is not an IP address or CIDR block`,
				`rules[1].from[0].source.notIpBlocks[0]: "example.com" is not an IP address or CIDR block`,
				`rules[1].from[0].source.notIpBlocks[1]: "fe80::1%eth0": an IP block cannot have a zone`,
				`rules[1].from[0].source.notIpBlocks[2]: "::ffff:0.0.0.0/80": an IPv4-mapped IPv6 block shorter than /96`,
			},
		},
		{
			name: "bad ports",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{To: to(op{
				Ports:    []string{"0", "65536", "http"},
				NotPorts: []string{"+80", "", "123456", " 80"},
			})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg: []string{
				`rules[0].to[0].operation.ports[0]: "0" is not a port number 1-65535`,
				`ports[1]: "65536"`, `ports[2]: "http"`,
				`notPorts[0]: "+80"`, `notPorts[1]: ""`, `notPorts[2]: "123456"`, `notPorts[3]: " 80"`,
			},
		},
		{
			name: "DENY with several problems fails closed and lists them all",
			spec: apSpec{Action: securityv1alpha1.ActionDeny, Rules: []securityv1alpha1.Rule{
				{From: from(src{IPBlocks: []string{"300.0.0.1"}})},
				{To: to(op{Ports: []string{"99999"}})},
				{From: from(src{Principals: []string{"a*b"}})},
			}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{"rules[0].from[0].source.ipBlocks[0]", "; rules[1].to[0].operation.ports[0]", "; rules[2].from[0].source.principals[0]", "ztunnel denies every connection to the selected workloads until this is fixed"},
		},
		{
			name:       "invalid AUDIT sends nothing",
			spec:       apSpec{Action: securityv1alpha1.ActionAudit, Rules: []securityv1alpha1.Rule{{From: from(src{})}, {To: to(op{Ports: []string{"x"}})}}},
			want:       nil,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{"rules[0].from[0].source: must set", "rules[1].to[0].operation.ports[0]", "nothing is audited until this is fixed"},
		},
		{
			name: "invalid and HTTP fields: Invalid wins and both are listed",
			spec: apSpec{Rules: []securityv1alpha1.Rule{
				{To: to(op{Methods: []string{"GET"}})},
				{From: from(src{Namespaces: []string{"a*b"}})},
			}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{"rules[1].from[0].source.namespaces[0]", "rules[0].to[0].operation sets methods: HTTP fields need a waypoint"},
		},
		{
			name: "many problems are counted, not all listed",
			spec: apSpec{Rules: []securityv1alpha1.Rule{{To: to(op{Ports: []string{
				"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t",
			}})}}},
			want:       denyAllShop,
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{`ports[15]: "p"`, "; and 4 more;"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := CompileAuthorizationPolicy(apObj("shop", "p", tc.spec), root)
			if diff := cmp.Diff(tc.want, c.Authorization, protocmp.Transform()); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
			if tc.want == nil && c.Authorization != nil {
				t.Errorf("authorization %v, want nil", c.Authorization)
			}
			checkCondition(t, c.Condition, tc.wantReason)
			containsInOrder(t, c.Condition.Message, tc.wantMsg)
			mustPassZtunnel(t, c)
		})
	}
}

// containsInOrder fails t unless msg contains each of want, in order.
func containsInOrder(t *testing.T, msg string, want []string) {
	t.Helper()
	rest := msg
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("message %q: missing %q (or out of order)", msg, w)
			return
		}
		rest = rest[i+len(w):]
	}
}

func TestCompileAuthorizationPolicyHTTPFields(t *testing.T) {
	l4 := securityv1alpha1.Rule{From: from(src{Namespaces: []string{"a"}})}
	l7 := securityv1alpha1.Rule{To: to(op{Ports: []string{"80"}}, op{Methods: []string{"GET"}, Paths: []string{"/x"}})}
	for _, tc := range []struct {
		name    string
		ns      string
		spec    apSpec
		want    *workloadv1alpha1.Authorization
		wantMsg string
	}{
		{
			name:    "ALLOW denies everything",
			ns:      "shop",
			spec:    apSpec{Selector: sel("app", "web"), Rules: []securityv1alpha1.Rule{l4, l7}},
			want:    denyAllAuth("shop", "p", selScope),
			wantMsg: "rules[1].to[1].operation sets methods, paths: HTTP fields need a waypoint, which the selected workloads do not have; ztunnel denies every connection to them until the fields are removed",
		},
		{
			name: "DENY denies everything, global",
			ns:   root,
			spec: apSpec{Action: securityv1alpha1.ActionDeny, Rules: []securityv1alpha1.Rule{
				{To: to(op{NotHosts: []string{"a.example"}})},
				{To: to(op{Hosts: []string{"b.example"}, NotMethods: []string{"POST"}, NotPaths: []string{"/y"}})},
			}},
			want: denyAllAuth(root, "p", global),
			wantMsg: "rules[0].to[0].operation sets notHosts: HTTP fields need a waypoint, which the selected workloads do not have; " +
				"rules[1].to[0].operation sets notMethods, notPaths, hosts: HTTP fields need a waypoint, which the selected workloads do not have; " +
				"ztunnel denies every connection to them until the fields are removed",
		},
		{
			name: "AUDIT drops only the HTTP rules",
			ns:   "shop",
			spec: apSpec{Action: securityv1alpha1.ActionAudit, Rules: []securityv1alpha1.Rule{l7, l4, l7}},
			want: auth("shop", "p", nsScope, audit, rule(clause(&workloadv1alpha1.Match{Namespaces: []*workloadv1alpha1.StringMatch{exact("a")}}))),
			wantMsg: "rules[0].to[1].operation sets methods, paths: HTTP fields need a waypoint, which the selected workloads do not have; " +
				"rules[2].to[1].operation sets methods, paths: HTTP fields need a waypoint, which the selected workloads do not have; " +
				"these rules are not audited (the others are): rules[0], rules[2]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := CompileAuthorizationPolicy(apObj(tc.ns, "p", tc.spec), root)
			if diff := cmp.Diff(tc.want, c.Authorization, protocmp.Transform()); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
			checkCondition(t, c.Condition, securityv1alpha1.ReasonUnsupportedL7)
			if c.Condition.Message != tc.wantMsg {
				t.Errorf("message\n got %q\nwant %q", c.Condition.Message, tc.wantMsg)
			}
			mustPassZtunnel(t, c)
		})
	}
}

func TestCompilePeerAuthentication(t *testing.T) {
	const (
		unset      = workloadv1alpha1.MTLSMode_UNSET
		strict     = workloadv1alpha1.MTLSMode_STRICT
		permissive = workloadv1alpha1.MTLSMode_PERMISSIVE
		disable    = workloadv1alpha1.MTLSMode_DISABLE
	)
	mtls := func(m securityv1alpha1.MTLSMode) *securityv1alpha1.MutualTLS {
		return &securityv1alpha1.MutualTLS{Mode: m}
	}
	type ports = map[uint32]securityv1alpha1.MutualTLS
	type wantPorts = map[uint32]workloadv1alpha1.MTLSMode
	for _, tc := range []struct {
		name       string
		ns         string
		spec       paSpec
		want       *workloadv1alpha1.Authorization
		wantReason string
		wantMsg    []string
	}{
		{name: "mtls unset", ns: "shop", want: paAuth("shop", "p", nsScope, unset, nil)},
		{name: "empty mode", ns: "shop", spec: paSpec{MTLS: mtls("")}, want: paAuth("shop", "p", nsScope, unset, nil)},
		{name: "UNSET", ns: "shop", spec: paSpec{MTLS: mtls("UNSET")}, want: paAuth("shop", "p", nsScope, unset, nil)},
		{name: "STRICT", ns: "shop", spec: paSpec{MTLS: mtls("STRICT")}, want: paAuth("shop", "p", nsScope, strict, nil)},
		{name: "PERMISSIVE", ns: "shop", spec: paSpec{MTLS: mtls("PERMISSIVE")}, want: paAuth("shop", "p", nsScope, permissive, nil)},
		{name: "DISABLE", ns: "shop", spec: paSpec{MTLS: mtls("DISABLE")}, want: paAuth("shop", "p", nsScope, disable, nil)},
		{name: "global STRICT", ns: root, spec: paSpec{MTLS: mtls("STRICT")}, want: paAuth(root, "p", global, strict, nil)},
		{
			name: "portLevelMtls with selector",
			ns:   "shop",
			spec: paSpec{Selector: sel("app", "web"), MTLS: mtls("STRICT"), PortLevelMTLS: ports{8080: {Mode: "PERMISSIVE"}, 9090: {Mode: "DISABLE"}, 15020: {}}},
			want: paAuth("shop", "p", selScope, strict, wantPorts{8080: permissive, 9090: disable, 15020: unset}),
		},
		{
			name:       "portLevelMtls without selector is dropped, mode kept",
			ns:         "shop",
			spec:       paSpec{MTLS: mtls("STRICT"), PortLevelMTLS: ports{8080: {Mode: "PERMISSIVE"}}},
			want:       paAuth("shop", "p", nsScope, strict, nil),
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{"portLevelMtls needs a selector"},
		},
		{
			name:       "unknown mode is sent as UNSET",
			ns:         "shop",
			spec:       paSpec{MTLS: mtls("strict")},
			want:       paAuth("shop", "p", nsScope, unset, nil),
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{`mtls.mode: "strict" is not one of UNSET, STRICT, PERMISSIVE, DISABLE; sent as UNSET`},
		},
		{
			name:       "bad port-level entries are dropped, good ones kept, all problems listed",
			ns:         "shop",
			spec:       paSpec{Selector: sel("app", "web"), MTLS: mtls("BOGUS"), PortLevelMTLS: ports{0: {Mode: "STRICT"}, 70000: {Mode: "STRICT"}, 80: {Mode: "OFF"}, 443: {Mode: "STRICT"}}},
			want:       paAuth("shop", "p", selScope, unset, wantPorts{443: strict}),
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg: []string{
				`mtls.mode: "BOGUS"`,
				"portLevelMtls[0]: port is not in 1-65535; the entry is ignored",
				`portLevelMtls[80].mode: "OFF" is not one of`,
				"portLevelMtls[70000]: port is not in 1-65535",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := CompilePeerAuthentication(paObj(tc.ns, "p", tc.spec), root)
			if diff := cmp.Diff(tc.want, c.Authorization, protocmp.Transform()); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
			if c.ResourceName != tc.ns+"/peerauthentication:p" || c.Ref != (Ref{KindPeerAuthentication, tc.ns, "p"}) {
				t.Errorf("resource name %q, ref %v", c.ResourceName, c.Ref)
			}
			reason := tc.wantReason
			if reason == "" {
				reason = securityv1alpha1.ReasonAccepted
				tc.wantMsg = []string{MessageAccepted}
			}
			checkCondition(t, c.Condition, reason)
			containsInOrder(t, c.Condition.Message, tc.wantMsg)
			mustPassZtunnel(t, c)
		})
	}
}

func TestSelects(t *testing.T) {
	web := CompileAuthorizationPolicy(apObj("shop", "p", apSpec{Selector: sel("app", "web", "tier", "fe")}), root)
	every := CompileAuthorizationPolicy(apObj("shop", "p", apSpec{Selector: sel()}), root)
	mesh := CompilePeerAuthentication(paObj(root, "p", paSpec{Selector: sel("app", "web")}), root)
	nsWide := CompileAuthorizationPolicy(apObj("shop", "p", apSpec{}), root)
	global := CompilePeerAuthentication(paObj(root, "p", paSpec{}), root)
	for _, tc := range []struct {
		name   string
		c      Compiled
		ns     string
		labels map[string]string
		want   bool
	}{
		{"all labels match", web, "shop", map[string]string{"app": "web", "tier": "fe", "x": "y"}, true},
		{"one label missing", web, "shop", map[string]string{"app": "web"}, false},
		{"label value differs", web, "shop", map[string]string{"app": "web", "tier": "be"}, false},
		{"other namespace", web, "other", map[string]string{"app": "web", "tier": "fe"}, false},
		{"empty selector, pod without labels", every, "shop", nil, true},
		{"empty selector, other namespace", every, "other", nil, false},
		{"root namespace selector, any namespace", mesh, "other", map[string]string{"app": "web"}, true},
		{"root namespace selector, labels differ", mesh, "other", map[string]string{"app": "db"}, false},
		{"namespace scope is not listed", nsWide, "shop", nil, false},
		{"global scope is not listed", global, "shop", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.Selects(tc.ns, tc.labels); got != tc.want {
				t.Fatalf("Selects(%q, %v) = %v, want %v", tc.ns, tc.labels, got, tc.want)
			}
		})
	}
}

// FuzzCompile checks that whatever a user writes, the compiled resource is
// one ztunnel accepts, and that only an AUDIT policy ever sends nothing.
func FuzzCompile(f *testing.F) {
	f.Add("ALLOW", "cluster.local/ns/a/*", "team-*", "10.0.0.0/8", "8080", "", "STRICT", uint32(80), "PERMISSIVE")
	f.Add("DENY", "*", "*x", "fd00::/64", "0", "GET", "", uint32(0), "")
	f.Add("AUDIT", "spiffe://x", "a*b", "::ffff:1.2.3.4/120", "65536", "/p", "bogus", uint32(70000), "OFF")
	f.Add("", "", "", "", "", "", "UNSET", uint32(65535), "DISABLE")
	f.Fuzz(func(t *testing.T, action, principal, namespace, ip, port, method, mode string, plPort uint32, plMode string) {
		spec := apSpec{Action: securityv1alpha1.Action(action), Rules: []securityv1alpha1.Rule{
			{From: from(src{Principals: []string{principal}, NotNamespaces: []string{namespace}}, src{NotIPBlocks: []string{ip}})},
			{To: to(op{Ports: []string{port}})},
			{From: from(src{IPBlocks: []string{ip}}), To: to(op{NotPorts: []string{port}, Methods: nonEmpty(method)})},
		}}
		for _, s := range []*securityv1alpha1.WorkloadSelector{nil, sel("app", "web")} {
			spec.Selector = s
			c := CompileAuthorizationPolicy(apObj("shop", "p", spec), root)
			mustPassZtunnel(t, c)
			if c.Authorization == nil && !(action == "AUDIT" && c.Condition.Reason == securityv1alpha1.ReasonInvalid) {
				t.Fatalf("nothing sent for action %q, condition %+v", action, c.Condition)
			}
			if c.Condition.Status == metav1.ConditionTrue && c.Condition.Reason != securityv1alpha1.ReasonAccepted {
				t.Fatalf("condition %+v", c.Condition)
			}
			pa := CompilePeerAuthentication(paObj(root, "p", paSpec{
				Selector: s, MTLS: &securityv1alpha1.MutualTLS{Mode: securityv1alpha1.MTLSMode(mode)},
				PortLevelMTLS: map[uint32]securityv1alpha1.MutualTLS{plPort: {Mode: securityv1alpha1.MTLSMode(plMode)}},
			}), root)
			if pa.Authorization == nil {
				t.Fatal("PeerAuthentication compiled to nothing")
			}
			mustPassZtunnel(t, pa)
		}
	})
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// ExampleCompileAuthorizationPolicy shows the condition of a policy that uses
// an HTTP field.
func ExampleCompileAuthorizationPolicy() {
	p := &securityv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "get-only", Generation: 1},
		Spec:       apSpec{Rules: []securityv1alpha1.Rule{{To: to(op{Methods: []string{"GET"}})}}},
	}
	c := CompileAuthorizationPolicy(p, "ambit-system")
	fmt.Println(c.ResourceName, c.Authorization.GetAction(), len(c.Authorization.GetRules()))
	fmt.Println(c.Condition.Status, c.Condition.Reason)
	fmt.Println(c.Condition.Message)
	// Output:
	// shop/get-only DENY 1
	// False UnsupportedL7
	// rules[0].to[0].operation sets methods: HTTP fields need a waypoint, which the selected workloads do not have; ztunnel denies every connection to them until the fields are removed
}

// TestWhenFailsClosedOnZtunnel: a selector policy with `when` cannot be
// enforced at L4 and is not compiled as if the condition were absent.
func TestWhenFailsClosedOnZtunnel(t *testing.T) {
	p := &securityv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "p", Generation: 1},
		Spec: securityv1alpha1.AuthorizationPolicySpec{
			Selector: &securityv1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}},
			Rules:    []securityv1alpha1.Rule{{When: []securityv1alpha1.Condition{{Key: "source.ip", Values: []string{"10.0.0.1"}}}}},
		},
	}
	c := CompileAuthorizationPolicy(p, "ambit-system")
	if c.Condition.Reason != securityv1alpha1.ReasonUnsupportedL7 || !strings.Contains(c.Condition.Message, "rules[0].when[0]") {
		t.Errorf("condition %+v, want UnsupportedL7 naming rules[0].when[0]", c.Condition)
	}
	if a := c.Authorization; a == nil || a.Action != workloadv1alpha1.Action_DENY || len(a.Rules) != 1 || len(a.Rules[0].Clauses) != 0 {
		t.Errorf("authorization %v, want deny-all", c.Authorization)
	}
}
