package httproute

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"ambit.dev/controlplane/internal/waypointxds"
)

func services() Lookup {
	m := map[ServiceRef]Service{
		{"demo", "reviews"}:    {Hostname: "reviews.demo.svc.cluster.local", Waypoint: "demo/waypoint", Ports: []Port{{80, waypointxds.ProtocolHTTP}, {9000, waypointxds.ProtocolTCP}}},
		{"demo", "reviews-v1"}: {Hostname: "reviews-v1.demo.svc.cluster.local", Ports: []Port{{80, waypointxds.ProtocolHTTP}}},
		{"demo", "reviews-v2"}: {Hostname: "reviews-v2.demo.svc.cluster.local", Ports: []Port{{80, waypointxds.ProtocolHTTP}}},
		{"demo", "nowp"}:       {Hostname: "nowp.demo.svc.cluster.local", Ports: []Port{{80, waypointxds.ProtocolHTTP}}},
		{"demo", "db"}:         {Hostname: "db.demo.svc.cluster.local", Waypoint: "demo/waypoint", Ports: []Port{{5432, waypointxds.ProtocolTCP}}},
		{"other", "x"}:         {Hostname: "x.other.svc.cluster.local", Ports: []Port{{80, waypointxds.ProtocolHTTP}}},
	}
	return func(r ServiceRef) (Service, bool) { s, ok := m[r]; return s, ok }
}

// route parses an HTTPRoute spec given in YAML, in namespace demo.
func route(t *testing.T, name, spec string) *gwapiv1.HTTPRoute {
	t.Helper()
	rt := &gwapiv1.HTTPRoute{ObjectMeta: testMeta(name, 3)}
	decodeSpec(t, spec, &rt.Spec)
	return rt
}

// testMeta is the metadata of a test route in namespace demo.
func testMeta(name string, gen int64) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "demo", Name: name, Generation: gen,
		CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
}

func decodeSpec(t *testing.T, spec string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(spec), into); err != nil {
		t.Fatalf("spec: %v", err)
	}
}

const parent = "parentRefs: [{group: \"\", kind: Service, name: reviews, port: 80}]\n"

func ptr[T any](v T) *T { return &v }

// faults are the HTTPFaults of namespace demo: slow (valid) and bad (an
// abort status Envoy refuses, as if the CRD's validation was bypassed).
func faults(r FaultRef) (waypointxds.Fault, bool) {
	switch r {
	case FaultRef{"demo", "slow"}:
		return waypointxds.Fault{Delay: &waypointxds.FaultDelay{Fixed: 200 * time.Millisecond, Percent: 100}}, true
	case FaultRef{"demo", "bad"}:
		return waypointxds.Fault{Abort: &waypointxds.FaultAbort{HTTPStatus: 100, Percent: 100}}, true
	}
	return waypointxds.Fault{}, false
}

func TestFaultsRecorded(t *testing.T) {
	c := Compile(route(t, "r", parent+`rules:
- filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: gone}}]
  backendRefs: [{name: reviews, port: 80}]
- filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: slow}}]
  backendRefs: [{name: reviews, port: 80}]
`), services(), faults)
	if got := c.Parents[0].Faults; !slices.Equal(got, []FaultRef{{"demo", "gone"}, {"demo", "slow"}}) {
		t.Errorf("Faults %v, want demo/gone and demo/slow (existing or not, for re-compiles)", got)
	}
}

func TestCompile(t *testing.T) {
	tests := []struct {
		name         string
		spec         string
		wantAccepted string // reason
		wantResolved string // reason
		wantMsg      string // substring of the Accepted or ResolvedRefs message
		wantRoutes   []waypointxds.Route
	}{
		{
			name: "canary 90/10 and a header match",
			spec: parent + `rules:
- matches: [{headers: [{name: User-Agent, type: RegularExpression, value: ".*Mobile.*"}]}]
  backendRefs: [{name: reviews-v2, port: 80}]
- backendRefs: [{name: reviews-v1, port: 80, weight: 90}, {name: reviews-v2, port: 80, weight: 10}]
`,
			wantAccepted: "Accepted", wantResolved: "ResolvedRefs",
			wantRoutes: []waypointxds.Route{
				{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/", Headers: []waypointxds.ValueMatch{{Name: "user-agent", Value: ".*Mobile.*", Regex: true}}},
					Backends: []waypointxds.Backend{{Hostname: "reviews-v2.demo.svc.cluster.local", Port: 80, Weight: 1}}},
				{Name: "demo.r.1.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"},
					Backends: []waypointxds.Backend{{Hostname: "reviews-v1.demo.svc.cluster.local", Port: 80, Weight: 90}, {Hostname: "reviews-v2.demo.svc.cluster.local", Port: 80, Weight: 10}}},
			},
		},
		{
			name: "paths, method, query; prefix trailing slash dropped",
			spec: parent + `rules:
- matches: [{path: {type: PathPrefix, value: /api/}, method: POST, queryParams: [{name: debug, value: "1"}]}, {path: {type: Exact, value: /healthz}}]
  backendRefs: [{name: reviews, port: 80}]
`,
			wantAccepted: "Accepted", wantResolved: "ResolvedRefs",
			wantRoutes: []waypointxds.Route{
				{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/api", Method: "POST", QueryParams: []waypointxds.ValueMatch{{Name: "debug", Value: "1"}}},
					Backends: []waypointxds.Backend{{Hostname: "reviews.demo.svc.cluster.local", Port: 80, Weight: 1}}},
				{Name: "demo.r.0.1", Match: waypointxds.RouteMatch{PathType: waypointxds.PathExact, Path: "/healthz"},
					Backends: []waypointxds.Backend{{Hostname: "reviews.demo.svc.cluster.local", Port: 80, Weight: 1}}},
			},
		},
		{
			name: "filters, timeouts and retry",
			spec: parent + `rules:
- filters:
  - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Env, value: prod}], add: [{name: X-Tag, value: a}], remove: [X-Debug]}}
  - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: Cache-Control, value: no-store}]}}
  - {type: URLRewrite, urlRewrite: {hostname: internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
  matches: [{path: {type: PathPrefix, value: /v1}}]
  timeouts: {request: 10s, backendRequest: 2s}
  retry: {attempts: 4, codes: [503], backoff: 50ms}
  backendRefs: [{name: reviews, port: 80}]
`,
			wantAccepted: "Accepted", wantResolved: "ResolvedRefs",
			wantRoutes: []waypointxds.Route{{
				Name:            "demo.r.0.0",
				Match:           waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/v1"},
				Backends:        []waypointxds.Backend{{Hostname: "reviews.demo.svc.cluster.local", Port: 80, Weight: 1}},
				RequestHeaders:  waypointxds.HeaderModifier{Set: []waypointxds.Header{{Name: "x-env", Value: "prod"}}, Add: []waypointxds.Header{{Name: "x-tag", Value: "a"}}, Remove: []string{"x-debug"}},
				ResponseHeaders: waypointxds.HeaderModifier{Set: []waypointxds.Header{{Name: "cache-control", Value: "no-store"}}},
				Rewrite:         &waypointxds.Rewrite{Hostname: "internal", Path: &waypointxds.PathModifier{PrefixMatch: ptr("/v2")}},
				Timeout:         10 * time.Second,
				Retry:           &waypointxds.Retry{Attempts: 4, Codes: []int{503}, Backoff: 50 * time.Millisecond, PerTryTimeout: 2 * time.Second},
			}},
		},
		{
			name: "backendRequest timeout alone keeps the default attempts",
			spec: parent + `rules:
- timeouts: {backendRequest: 1s}
  backendRefs: [{name: reviews, port: 80}]
`,
			wantAccepted: "Accepted", wantResolved: "ResolvedRefs",
			wantRoutes: []waypointxds.Route{{
				Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"},
				Backends: []waypointxds.Backend{{Hostname: "reviews.demo.svc.cluster.local", Port: 80, Weight: 1}},
				Retry:    &waypointxds.Retry{Attempts: 2, Codes: []int{503}, PerTryTimeout: time.Second},
			}},
		},
		{
			name: "redirect",
			spec: parent + `rules:
- matches: [{path: {type: PathPrefix, value: /old}}]
  filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.com, port: 8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}}]
`,
			wantAccepted: "Accepted", wantResolved: "ResolvedRefs",
			wantRoutes: []waypointxds.Route{{
				Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/old"},
				Redirect: &waypointxds.Redirect{Scheme: "https", Hostname: "example.com", Port: 8443, StatusCode: 301, Path: &waypointxds.PathModifier{FullPath: ptr("/new")}},
			}},
		},
		{
			name: "a missing backend is left out; none left gives 500",
			spec: parent + `rules:
- backendRefs: [{name: reviews-v1, port: 80}, {name: gone, port: 80}]
- matches: [{path: {type: Exact, value: /x}}]
  backendRefs: [{name: gone, port: 80}]
`,
			wantAccepted: "Accepted", wantResolved: "BackendNotFound", wantMsg: "Service demo/gone does not exist",
			wantRoutes: []waypointxds.Route{
				{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"},
					Backends: []waypointxds.Backend{{Hostname: "reviews-v1.demo.svc.cluster.local", Port: 80, Weight: 1}}},
				{Name: "demo.r.1.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathExact, Path: "/x"}, DirectStatus: 500},
			},
		},
		{
			name:         "cross-namespace backend is not permitted",
			spec:         parent + "rules: [{backendRefs: [{name: x, namespace: other, port: 80}]}]\n",
			wantAccepted: "Accepted", wantResolved: "RefNotPermitted", wantMsg: "another namespace",
			wantRoutes: []waypointxds.Route{{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"}, DirectStatus: 500}},
		},
		{
			name:         "backend of another kind",
			spec:         parent + "rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b, port: 80}]}]\n",
			wantAccepted: "Accepted", wantResolved: "InvalidKind", wantMsg: "only Service",
			wantRoutes: []waypointxds.Route{{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"}, DirectStatus: 500}},
		},
		{
			name:         "unsupported filter rejects the route",
			spec:         parent + "rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: reviews-v1, port: 80}}}], backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "RequestMirror is not supported yet",
		},
		{
			name:         "bad regex rejects the route",
			spec:         parent + "rules: [{matches: [{path: {type: RegularExpression, value: \"/(a\"}}], backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "path regular expression",
		},
		{
			name:         "prefix rewrite needs a prefix match",
			spec:         parent + "rules: [{matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}], backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "ReplacePrefixMatch needs a PathPrefix",
		},
		{
			name:         "parent without a waypoint",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: nowp}]\nrules: [{backendRefs: [{name: nowp, port: 80}]}]\n",
			wantAccepted: ReasonWaypointRequired, wantResolved: "ResolvedRefs", wantMsg: "ambit.dev/use-waypoint",
		},
		{
			name:         "parent that does not exist",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: gone}]\n",
			wantAccepted: "NoMatchingParent", wantMsg: "does not exist",
		},
		{
			name:         "parent port that does not exist",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: reviews, port: 81}]\n",
			wantAccepted: "NoMatchingParent", wantMsg: "no port 81",
		},
		{
			name:         "parent port that is TCP",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: reviews, port: 9000}]\n",
			wantAccepted: "UnsupportedProtocol", wantMsg: "not an HTTP port",
		},
		{
			name:         "parent with no HTTP port",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: db}]\n",
			wantAccepted: "UnsupportedProtocol", wantMsg: "no HTTP port",
		},
		{
			name:         "consumer route (parent in another namespace)",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: x, namespace: other}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "consumer routes",
		},
		{
			name: "HTTPFault ExtensionRef: the rule carries the fault",
			spec: parent + `rules:
- matches: [{path: {type: PathPrefix, value: /slow}}]
  filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: slow}}]
  backendRefs: [{name: reviews, port: 80}]
`,
			wantAccepted: "Accepted", wantResolved: "ResolvedRefs",
			wantRoutes: []waypointxds.Route{{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/slow"},
				Backends: []waypointxds.Backend{{Hostname: "reviews.demo.svc.cluster.local", Port: 80, Weight: 1}},
				Fault:    &waypointxds.Fault{Delay: &waypointxds.FaultDelay{Fixed: 200 * time.Millisecond, Percent: 100}}}},
		},
		{
			name: "missing HTTPFault: its rule answers 500, the others keep working",
			spec: parent + `rules:
- matches: [{path: {type: PathPrefix, value: /gone}}]
  filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: gone}}]
  backendRefs: [{name: reviews, port: 80}]
- backendRefs: [{name: reviews, port: 80}]
`,
			wantAccepted: "Accepted", wantResolved: ReasonFilterNotFound, wantMsg: "HTTPFault demo/gone does not exist",
			wantRoutes: []waypointxds.Route{
				{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/gone"}, DirectStatus: 500},
				{Name: "demo.r.1.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"},
					Backends: []waypointxds.Backend{{Hostname: "reviews.demo.svc.cluster.local", Port: 80, Weight: 1}}},
			},
		},
		{
			name:         "invalid HTTPFault: 500",
			spec:         parent + "rules: [{filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: bad}}], backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "Accepted", wantResolved: ReasonInvalidFilter, wantMsg: "HTTP status 100",
			wantRoutes: []waypointxds.Route{{Name: "demo.r.0.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"}, DirectStatus: 500}},
		},
		{
			name:         "ExtensionRef of another kind is refused",
			spec:         parent + "rules: [{filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}], backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "ExtensionRef Magic.example.com is not supported",
		},
		{
			name: "two HTTPFaults in one rule are refused",
			spec: parent + `rules:
- filters:
  - {type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: slow}}
  - {type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: slow}}
  backendRefs: [{name: reviews, port: 80}]
`,
			wantAccepted: "UnsupportedValue", wantMsg: "one HTTPFault filter",
		},
		{
			name:         "host header modifier is refused",
			spec:         parent + "rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: x}]}}], backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "cannot be modified",
		},
		{
			name:         "bad duration",
			spec:         parent + "rules: [{timeouts: {request: 10x}, backendRefs: [{name: reviews, port: 80}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "timeouts.request",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Compile(route(t, "r", tc.spec), services(), faults)
			if len(c.Parents) != 1 {
				t.Fatalf("%d parents, want 1", len(c.Parents))
			}
			p := c.Parents[0]
			if p.Accepted.Reason != tc.wantAccepted {
				t.Errorf("Accepted reason %q (%s), want %q", p.Accepted.Reason, p.Accepted.Message, tc.wantAccepted)
			}
			if (p.Accepted.Status == metav1.ConditionTrue) != (tc.wantAccepted == "Accepted") {
				t.Errorf("Accepted status %s with reason %s", p.Accepted.Status, p.Accepted.Reason)
			}
			if tc.wantResolved != "" && p.ResolvedRefs.Reason != tc.wantResolved {
				t.Errorf("ResolvedRefs reason %q (%s), want %q", p.ResolvedRefs.Reason, p.ResolvedRefs.Message, tc.wantResolved)
			}
			if p.Accepted.ObservedGeneration != 3 || p.ResolvedRefs.ObservedGeneration != 3 {
				t.Errorf("observedGeneration %d/%d, want 3", p.Accepted.ObservedGeneration, p.ResolvedRefs.ObservedGeneration)
			}
			if tc.wantMsg != "" && !strings.Contains(p.Accepted.Message+" | "+p.ResolvedRefs.Message, tc.wantMsg) {
				t.Errorf("messages %q | %q do not say %q", p.Accepted.Message, p.ResolvedRefs.Message, tc.wantMsg)
			}
			if diff := cmp.Diff(tc.wantRoutes, Routes(p.Rules)); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompileSkipsGatewayParents(t *testing.T) {
	c := Compile(route(t, "r", "parentRefs: [{name: some-gateway}, {group: \"\", kind: Service, name: reviews}]\n"), services(), nil)
	if len(c.Parents) != 1 || c.Parents[0].Service != (ServiceRef{"demo", "reviews"}) {
		t.Fatalf("parents %+v, want only the Service", c.Parents)
	}
	if got := c.Parents[0].Ports; len(got) != 1 || got[0] != 80 {
		t.Fatalf("ports %v, want the HTTP port 80 only", got)
	}
}

func TestCompileBackendServicesListed(t *testing.T) {
	c := Compile(route(t, "r", parent+"rules: [{backendRefs: [{name: reviews-v1, port: 80}, {name: gone, port: 80}, {name: reviews-v1, port: 80}]}]\n"), services(), nil)
	want := []ServiceRef{{"demo", "reviews-v1"}, {"demo", "gone"}}
	if diff := cmp.Diff(want, c.Parents[0].BackendServices); diff != "" {
		t.Fatalf("backend services (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]waypointxds.Backend{{Hostname: "reviews-v1.demo.svc.cluster.local", Port: 80}}, c.Parents[0].Backends); diff != "" {
		t.Fatalf("backends (-want +got):\n%s", diff)
	}
}

func TestOrder(t *testing.T) {
	old := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	newer := old.Add(time.Hour)
	mk := func(name string, k sortKey) Rule { return Rule{Route: waypointxds.Route{Name: name}, key: k} }
	rules := []Rule{
		mk("prefix-short", sortKey{pathKind: 2, pathLen: 1, created: old}),
		mk("prefix-long", sortKey{pathKind: 2, pathLen: 5, created: old}),
		mk("regex", sortKey{pathKind: 1, pathLen: 3, created: old}),
		mk("exact", sortKey{pathKind: 0, pathLen: 2, created: old}),
		mk("prefix-short-method", sortKey{pathKind: 2, pathLen: 1, method: true, created: old}),
		mk("prefix-short-2headers", sortKey{pathKind: 2, pathLen: 1, headers: 2, created: old}),
		mk("prefix-short-1header", sortKey{pathKind: 2, pathLen: 1, headers: 1, created: old}),
		mk("prefix-short-1header-query", sortKey{pathKind: 2, pathLen: 1, headers: 1, queries: 1, created: old}),
		mk("prefix-short-newer", sortKey{pathKind: 2, pathLen: 1, created: newer}),
		mk("prefix-short-b-route", sortKey{pathKind: 2, pathLen: 1, created: old, route: "b"}),
		mk("prefix-short-rule1", sortKey{pathKind: 2, pathLen: 1, created: old, rule: 1}),
	}
	Order(rules)
	var got []string
	for _, r := range rules {
		got = append(got, r.Name)
	}
	want := []string{"exact", "regex", "prefix-long", "prefix-short-method", "prefix-short-2headers",
		"prefix-short-1header-query", "prefix-short-1header", "prefix-short", "prefix-short-rule1", "prefix-short-b-route", "prefix-short-newer"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("order (-want +got):\n%s", diff)
	}
}
