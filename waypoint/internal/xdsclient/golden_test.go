package xdsclient

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"ambit.dev/pkg/deltaxds"
	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

// goldenDir holds the resources the control plane generates
// (controlplane/internal/waypointxds TestGolden): the other side of
// XDS.md. This test is the contract check between the two modules.
const goldenDir = "../../../controlplane/internal/waypointxds/testdata"

// readGolden parses a golden file: "# <type URL>" lines, each followed by
// that type's resources as protojson documents.
func readGolden(t *testing.T, path string) map[string][]*anypb.Any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: the control plane's golden files are the contract's other half", err)
	}
	out := map[string][]*anypb.Any{}
	var typeURL string
	var doc bytes.Buffer
	flush := func() {
		if strings.TrimSpace(doc.String()) == "" {
			return
		}
		dec := json.NewDecoder(&doc)
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %s: %v", path, typeURL, err)
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			m := mt.New().Interface()
			if err := protojson.Unmarshal(raw, m); err != nil {
				t.Fatalf("%s: %s: %v", path, typeURL, err)
			}
			a, err := anypb.New(m)
			if err != nil {
				t.Fatal(err)
			}
			out[typeURL] = append(out[typeURL], a)
		}
		doc.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if h, ok := strings.CutPrefix(sc.Text(), "# "); ok {
			flush()
			typeURL = h
			continue
		}
		doc.WriteString(sc.Text() + "\n")
	}
	flush()
	return out
}

func nameOf(a *anypb.Any) string {
	m, _ := a.UnmarshalNew()
	r := m.ProtoReflect()
	for _, f := range []protoreflect.Name{"name", "cluster_name"} {
		if fd := r.Descriptor().Fields().ByName(f); fd != nil {
			return r.Get(fd).String()
		}
	}
	return ""
}

// TestControlPlaneGoldens feeds every golden of the control plane through
// the client, type by type in ADS order, as a server would send it: no
// resource may be NACKed, and the result must be complete.
func TestControlPlaneGoldens(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(goldenDir, "*.golden"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden files in %s (%v)", goldenDir, err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			res := readGolden(t, path)
			c, rec := newClient(t)
			// The goldens' trust domain, from the SAN prefix they check.
			c.cfg.TrustDomain = td
			if strings.Contains(string(mustRead(t, path)), "spiffe://example.org/") {
				c.cfg.TrustDomain = "example.org"
			}
			for _, typ := range typeURLs {
				resp := &discovery.DeltaDiscoveryResponse{TypeUrl: typ, Nonce: typ}
				for _, a := range res[typ] {
					resp.Resources = append(resp.Resources, &discovery.Resource{Name: nameOf(a), Version: "v1", Resource: a})
				}
				for _, req := range c.Apply(resp) {
					if d := req.GetErrorDetail(); d != nil {
						t.Fatalf("NACK of the control plane's %s: %s", deltaxds.TypeName(typ), d.GetMessage())
					}
				}
			}
			cfg := rec.last()
			if !cfg.Complete() {
				t.Fatalf("incomplete: missing %v", cfg.Missing)
			}
			httpChains := 0
			for _, ch := range cfg.Chains {
				if ch.Protocol.IsHTTP() {
					httpChains++
				}
			}
			if httpChains != len(res[TypeRoute]) || len(cfg.Routes) != httpChains {
				t.Errorf("%d HTTP chains, %d route configurations served, %d used", httpChains, len(res[TypeRoute]), len(cfg.Routes))
			}
			for _, ch := range cfg.Chains {
				if ch.Protocol.IsHTTP() && cfg.Routes[ch.RouteName] == nil {
					t.Errorf("chain %s without its route table", ch.Name)
				}
				if cl := cfg.Clusters[ch.Cluster]; ch.Cluster != "" && (cl == nil || !cl.HasEndpoints) {
					t.Errorf("chain %s without its cluster's endpoints", ch.Name)
				}
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixturesMatchControlPlane checks that xdstest, which the in-process
// tests serve, builds exactly the control plane's example.golden
// resources (XDS.md §10).
func TestFixturesMatchControlPlane(t *testing.T) {
	res := readGolden(t, goldenDir+"/example.golden")
	web := xdstest.Example()
	mine := map[string]proto.Message{}
	for _, l := range xdstest.Listeners(td, []xdstest.Service{web}) {
		mine[l.GetName()] = l
	}
	for _, c := range xdstest.Clusters(td, []xdstest.Service{web}) {
		mine["c/"+c.GetName()] = c
	}
	mine["e/"+web.ClusterName()] = xdstest.Assignment(web)
	mine["r/"+web.RouteName()] = xdstest.Route(web)
	for typ, as := range res {
		for _, a := range as {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			key := nameOf(a)
			switch typ {
			case TypeCluster:
				key = "c/" + key
			case TypeAssignment:
				key = "e/" + key
			case TypeRoute:
				key = "r/" + key
			}
			want := mine[key]
			delete(mine, key)
			if !proto.Equal(m, want) {
				t.Errorf("%s differs:\ngolden %s\nxdstest %s", key, protojson.Format(m), protojson.Format(want))
			}
		}
	}
	if len(mine) > 0 {
		t.Errorf("xdstest builds resources the control plane does not: %v", slices.Collect(maps.Keys(mine)))
	}
}

// TestAuthzGolden evaluates the control plane's authz.golden (XDS.md
// §12): its RBAC filters parse, and decide as the policies were written.
func TestAuthzGolden(t *testing.T) {
	res := readGolden(t, goldenDir+"/authz.golden")
	var chains []*model.Chain
	for _, a := range res[TypeListener] {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		pl, err := ParseListener(&l, td)
		if err != nil {
			t.Fatalf("listener %s: %v", l.GetName(), err)
		}
		chains = append(chains, pl.Chains...)
	}
	byName := map[string]*model.Chain{}
	for _, ch := range chains {
		byName[ch.Name] = ch
	}
	httpCh := byName["inbound-vip|80|http|web.demo.svc.cluster.local"]
	tcpCh := byName["inbound-vip|5432|tcp|web.demo.svc.cluster.local"]
	if httpCh == nil || tcpCh == nil {
		t.Fatalf("chains %v", slices.Collect(maps.Keys(byName)))
	}
	if len(httpCh.RBAC) != 3 || !httpCh.RBAC[0].Shadow || httpCh.RBAC[1].Action != model.RBACDeny || httpCh.RBAC[2].Action != model.RBACAllow {
		t.Fatalf("HTTP chain RBAC %+v, want audit (shadow), deny, allow", httpCh.RBAC)
	}
	if httpCh.AccessLog == nil || httpCh.AccessLog.Sampled != 10 || httpCh.AccessLog.MinStatus != 400 {
		t.Errorf("access log %+v, want 10%% sampled or status >= 400", httpCh.AccessLog)
	}
	client := "spiffe://cluster.local/ns/demo/sa/client"
	if len(tcpCh.RBAC) != 3 {
		t.Fatalf("TCP chain RBAC %+v, want audit, deny, allow", tcpCh.RBAC)
	}
	tcpAllow := &model.Chain{RBAC: tcpCh.RBAC[2:]}
	for _, tc := range []struct {
		name    string
		ch      *model.Chain
		a       model.Attributes
		allowed bool
		policy  string
	}{
		{"client GET /public", httpCh, model.Attributes{HTTP: true, Method: "GET", Path: "/public/x", Port: 80, Principal: client, Header: http.Header{}}, true, ""},
		{"client POST /public", httpCh, model.Attributes{HTTP: true, Method: "POST", Path: "/public/x", Port: 80, Principal: client, Header: http.Header{}}, false, "none"},
		{"debug header denied", httpCh, model.Attributes{HTTP: true, Method: "GET", Path: "/debug/x", Port: 80, Principal: client, Header: http.Header{"X-Debug": {"1"}}}, false, "ns[demo]-policy[deny-debug]-rule[0]"},
		// The TCP ALLOW filter alone (the DENY rule below matches all of
		// TCP 5432): only the L4 rule[1] is in it.
		{"ops namespace on 5432", tcpAllow, model.Attributes{Port: 5432, Principal: "spiffe://cluster.local/ns/ops/sa/db", SourceIP: netip.MustParseAddr("192.168.0.1")}, true, ""},
		{"ops from 10/8", tcpAllow, model.Attributes{Port: 5432, Principal: "spiffe://cluster.local/ns/ops/sa/db", SourceIP: netip.MustParseAddr("10.1.1.1")}, false, "none"},
		// The DENY rule's HTTP fields match everything on TCP; its port
		// condition (not 9090) still applies.
		{"TCP deny rule matches", tcpCh, model.Attributes{Port: 5432, Principal: client}, false, "ns[demo]-policy[deny-debug]-rule[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := model.Authorize(tc.ch.RBAC, tc.a)
			if d.Allowed != tc.allowed || d.Policy != tc.policy {
				t.Errorf("Authorize = %+v, want allowed=%v policy %q", d, tc.allowed, tc.policy)
			}
			if tc.ch != tcpAllow && len(d.Audited) != 1 {
				t.Errorf("audited %v, want the audit-all rule", d.Audited)
			}
		})
	}
}

// TestPlaintextEndpointGolden: the control plane's endpoint for a pod
// outside the mesh (mixed.golden's api-legacy) is read as a plaintext
// endpoint, and a socket address with tunnel metadata is refused.
func TestPlaintextEndpointGolden(t *testing.T) {
	res := readGolden(t, goldenDir+"/mixed.golden")
	found := false
	for _, a := range res[TypeAssignment] {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		cla := m.(*endpointv3.ClusterLoadAssignment)
		eps, err := ParseAssignment(cla, "example.org")
		if err != nil {
			t.Fatalf("%s: %v", cla.GetClusterName(), err)
		}
		for _, ep := range eps {
			if ep.Workload != "api-legacy" {
				continue
			}
			found = true
			if !ep.Plaintext || ep.Destination != netip.MustParseAddrPort("10.1.0.11:8443") || ep.Tunnel.IsValid() || !ep.Identity.IsZero() {
				t.Fatalf("api-legacy = %+v, want plaintext to 10.1.0.11:8443", ep)
			}
		}
		// The same endpoint with tunnel metadata is a contradiction.
		for _, loc := range cla.GetEndpoints() {
			for _, lb := range loc.GetLbEndpoints() {
				if lb.GetEndpoint().GetAddress().GetSocketAddress() == nil {
					continue
				}
				bad := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
				bad.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{proto.Clone(lb).(*endpointv3.LbEndpoint)}}}
				bad.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata[MetadataTunnel], _ = structpb.NewStruct(map[string]any{"address": "10.1.0.11:15008"})
				if _, err := ParseAssignment(bad, "example.org"); err == nil || !strings.Contains(err.Error(), "takes no tunnel") {
					t.Fatalf("a socket address with tunnel metadata: %v", err)
				}
			}
		}
	}
	if !found {
		t.Fatal("mixed.golden has no api-legacy endpoint")
	}
}
