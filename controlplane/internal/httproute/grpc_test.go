package httproute

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/waypointxds"
)

func grpcServices() Lookup {
	m := map[ServiceRef]Service{
		{"demo", "echo"}:    {Hostname: "echo.demo.svc.cluster.local", Waypoint: "demo/waypoint", Ports: []Port{{9090, waypointxds.ProtocolHTTP2}, {80, waypointxds.ProtocolHTTP}}},
		{"demo", "echo-v1"}: {Hostname: "echo-v1.demo.svc.cluster.local", Ports: []Port{{9090, waypointxds.ProtocolHTTP2}}},
		{"demo", "echo-v2"}: {Hostname: "echo-v2.demo.svc.cluster.local", Ports: []Port{{9090, waypointxds.ProtocolGRPC}}},
		{"demo", "web"}:     {Hostname: "web.demo.svc.cluster.local", Waypoint: "demo/waypoint", Ports: []Port{{80, waypointxds.ProtocolHTTP}}},
	}
	return func(r ServiceRef) (Service, bool) { s, ok := m[r]; return s, ok }
}

func grpcRoute(t *testing.T, name, spec string) *gwapiv1.GRPCRoute {
	t.Helper()
	rt := &gwapiv1.GRPCRoute{ObjectMeta: testMeta(name, 2)}
	decodeSpec(t, spec, &rt.Spec)
	return rt
}

func TestCompileGRPC(t *testing.T) {
	const echo = "parentRefs: [{group: \"\", kind: Service, name: echo}]\n"
	v1 := []waypointxds.Backend{{Hostname: "echo-v1.demo.svc.cluster.local", Port: 9090, Weight: 1}}
	v2 := []waypointxds.Backend{{Hostname: "echo-v2.demo.svc.cluster.local", Port: 9090, Weight: 1}}
	prefix := func(p string) waypointxds.RouteMatch {
		return waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: p}
	}
	tests := []struct {
		name         string
		spec         string
		wantAccepted string
		wantMsg      string
		wantPorts    []uint16
		wantRoutes   []waypointxds.Route
	}{
		{
			// Precedence: characters of the service, then of the method,
			// then header matches (a regex counts its characters).
			name: "method and header matches, in gRPC precedence; only the HTTP/2 port",
			spec: echo + `rules:
- backendRefs: [{name: echo-v1, port: 9090}]
- matches: [{method: {service: grpc.health.v1.Health}}]
  backendRefs: [{name: echo-v1, port: 9090}]
- matches: [{method: {service: grpc.health.v1.Health, method: Check}, headers: [{name: X-Canary, value: "yes"}]}]
  backendRefs: [{name: echo-v2, port: 9090}]
- matches: [{method: {method: Watch}}, {method: {type: RegularExpression, service: "grpc\\.health\\..*"}}]
  filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-route, value: re}]}}]
  backendRefs: [{name: echo-v2, port: 9090}]
`,
			wantAccepted: "Accepted", wantPorts: []uint16{9090},
			wantRoutes: []waypointxds.Route{
				{Name: "grpc.demo.g.2.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathExact, Path: "/grpc.health.v1.Health/Check",
					Headers: []waypointxds.ValueMatch{{Name: "x-canary", Value: "yes"}}}, Backends: v2},
				{Name: "grpc.demo.g.1.0", Match: prefix("/grpc.health.v1.Health"), Backends: v1},
				{Name: "grpc.demo.g.3.1", Match: waypointxds.RouteMatch{PathType: waypointxds.PathRegex, Path: "/(?:grpc\\.health\\..*)/[^/]+"},
					RequestHeaders: waypointxds.HeaderModifier{Set: []waypointxds.Header{{Name: "x-route", Value: "re"}}}, Backends: v2},
				{Name: "grpc.demo.g.3.0", Match: waypointxds.RouteMatch{PathType: waypointxds.PathRegex, Path: "/[^/]+/Watch"},
					RequestHeaders: waypointxds.HeaderModifier{Set: []waypointxds.Header{{Name: "x-route", Value: "re"}}}, Backends: v2},
				{Name: "grpc.demo.g.0.0", Match: prefix("/"), Backends: v1},
			},
		},
		{
			name:         "an HTTP/1 port cannot carry gRPC",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]\nrules: [{backendRefs: [{name: web, port: 80}]}]\n",
			wantAccepted: "UnsupportedProtocol", wantMsg: "port 80 of Service demo/web is not an HTTP/2 port: gRPC needs HTTP/2",
		},
		{
			name:         "a bad method regex rejects the route",
			spec:         echo + "rules: [{matches: [{method: {type: RegularExpression, method: \"(\"}}], backendRefs: [{name: echo-v1, port: 9090}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "rule 0: match 0: method regular expression",
		},
		{
			name:         "RequestMirror is refused like on an HTTPRoute",
			spec:         echo + "rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: echo-v2, port: 9090}}}], backendRefs: [{name: echo-v1, port: 9090}]}]\n",
			wantAccepted: "UnsupportedValue", wantMsg: "RequestMirror",
		},
		{
			name:         "no waypoint on the parent",
			spec:         "parentRefs: [{group: \"\", kind: Service, name: echo-v1}]\nrules: [{backendRefs: [{name: echo-v1, port: 9090}]}]\n",
			wantAccepted: ReasonWaypointRequired,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := CompileGRPC(grpcRoute(t, "g", tc.spec), grpcServices(), nil)
			if c.Ref != (Ref{Kind: KindGRPCRoute, Namespace: "demo", Name: "g"}) || c.Ref.String() != "grpcroute demo/g" {
				t.Fatalf("ref %+v (%s)", c.Ref, c.Ref)
			}
			if len(c.Parents) != 1 {
				t.Fatalf("parents %+v", c.Parents)
			}
			p := c.Parents[0]
			if p.Accepted.Reason != tc.wantAccepted || p.Accepted.ObservedGeneration != 2 {
				t.Fatalf("accepted %+v, want reason %s", p.Accepted, tc.wantAccepted)
			}
			if tc.wantMsg != "" && !strings.Contains(p.Accepted.Message, tc.wantMsg) {
				t.Errorf("message %q does not say %q", p.Accepted.Message, tc.wantMsg)
			}
			if diff := cmp.Diff(tc.wantPorts, p.Ports); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			Order(p.Rules)
			if diff := cmp.Diff(tc.wantRoutes, Routes(p.Rules)); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGRPCMatch(t *testing.T) {
	tests := []struct {
		name     string
		match    string
		wantType gwapiv1.PathMatchType
		wantPath string
		wantErr  string
	}{
		{"service and method", "{method: {service: a.B, method: C}}", gwapiv1.PathMatchExact, "/a.B/C", ""},
		{"service only: whole segment prefix", "{method: {service: a.B}}", gwapiv1.PathMatchPathPrefix, "/a.B", ""},
		{"method only: quoted", "{method: {method: Get.All}}", gwapiv1.PathMatchRegularExpression, `/[^/]+/Get\.All`, ""},
		{"regex method only", "{method: {type: RegularExpression, method: \"Get.*\"}}", gwapiv1.PathMatchRegularExpression, "/[^/]+/(?:Get.*)", ""},
		{"exact with a slash", "{method: {service: a/b}}", "", "", "contains a /"},
		{"exact with nothing", "{method: {type: Exact}}", "", "", "needs a service or a method"},
		{"unknown type", "{method: {type: Prefix, service: a}}", "", "", "not Exact or RegularExpression"},
		{"headers only", "{headers: [{name: x, value: y}]}", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m gwapiv1.GRPCRouteMatch
			decodeSpec(t, tc.match, &m)
			got, _, err := grpcMatch(m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantPath == "" {
				if got.Path != nil {
					t.Fatalf("path %+v, want none", got.Path)
				}
				return
			}
			if got.Path == nil || *got.Path.Type != tc.wantType || *got.Path.Value != tc.wantPath {
				t.Fatalf("path %+v, want %s %s", got.Path, tc.wantType, tc.wantPath)
			}
		})
	}
}

// TestCompileGRPCFault: a GRPCRoute rule's HTTPFault ExtensionRef becomes
// its route's fault (a gRPC abort), and a missing one answers 500.
func TestCompileGRPCFault(t *testing.T) {
	unavailable := func(r FaultRef) (waypointxds.Fault, bool) {
		if r != (FaultRef{"demo", "unavailable"}) {
			return waypointxds.Fault{}, false
		}
		return waypointxds.Fault{Abort: &waypointxds.FaultAbort{GRPC: true, GRPCStatus: 14, Percent: 50}}, true
	}
	rule := func(fault string) string {
		return `parentRefs: [{group: "", kind: Service, name: echo, port: 9090}]
rules:
- filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: ` + fault + `}}]
  backendRefs: [{name: echo-v1, port: 9090}]
`
	}
	p := CompileGRPC(grpcRoute(t, "g", rule("unavailable")), grpcServices(), unavailable).Parents[0]
	if p.Accepted.Reason != "Accepted" || len(p.Rules) != 1 || p.Rules[0].Fault == nil || *p.Rules[0].Fault.Abort != (waypointxds.FaultAbort{GRPC: true, GRPCStatus: 14, Percent: 50}) {
		t.Fatalf("accepted %+v, rules %+v: want the gRPC abort on the rule", p.Accepted, Routes(p.Rules))
	}
	p = CompileGRPC(grpcRoute(t, "g", rule("gone")), grpcServices(), unavailable).Parents[0]
	if p.ResolvedRefs.Reason != ReasonFilterNotFound || len(p.Rules) != 1 || p.Rules[0].DirectStatus != 500 {
		t.Fatalf("resolvedRefs %+v, rules %+v: want FilterNotFound and a 500", p.ResolvedRefs, Routes(p.Rules))
	}
}
