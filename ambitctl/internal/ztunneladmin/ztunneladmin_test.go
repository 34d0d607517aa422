package ztunneladmin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/ztunnel/pkg/adminapi"
	"ambit.dev/ztunnel/pkg/admincli"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func zpod(name, node string, phase corev1.PodPhase, ready bool) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: name},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	return p
}

func TestTargets(t *testing.T) {
	pods := []corev1.Pod{
		zpod("ztunnel-b", "n2", corev1.PodRunning, true),
		zpod("ztunnel-a-old", "n1", corev1.PodRunning, false),
		zpod("ztunnel-a", "n1", corev1.PodRunning, true),
		zpod("ztunnel-c", "n3", corev1.PodPending, false),
		zpod("ztunnel-unscheduled", "", corev1.PodPending, false),
	}
	tests := []struct {
		name    string
		node    string
		want    []Target
		wantErr string
	}{
		{"every node, ready pod preferred", "", []Target{{"n1", "ambit-system", "ztunnel-a"}, {"n2", "ambit-system", "ztunnel-b"}}, ""},
		{"one node", "n2", []Target{{"n2", "ambit-system", "ztunnel-b"}}, ""},
		{"node without a running pod", "n3", nil, "no running ztunnel pod on node n3"},
		{"unknown node", "nx", nil, "no running ztunnel pod on node nx: check the node name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Targets("ambit-system", pods, tc.node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Targets = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Targets = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := Targets("ambit-system", nil, ""); err == nil || !strings.Contains(err.Error(), "is Ambit installed there") {
		t.Fatalf("Targets(no pods) = %v", err)
	}
}

// fakeGetter serves each pod's dump as ztunnel's admin endpoints would.
type fakeGetter struct {
	dumps map[string]adminapi.ConfigDump // by pod
	fail  map[string]error
	calls []string
}

func (f *fakeGetter) Get(_ context.Context, ns, pod string, port int, path string) ([]byte, error) {
	f.calls = append(f.calls, ns+"/"+pod+":"+path)
	if port != 15000 {
		return nil, errors.New("wrong port")
	}
	if err := f.fail[pod]; err != nil {
		return nil, err
	}
	d := f.dumps[pod]
	var v any
	switch path {
	case adminapi.PathCerts:
		v = d.Certificates
	case adminapi.PathWorkloads:
		v = d.Workloads
	case adminapi.PathServices:
		v = d.Services
	case adminapi.PathConnections:
		v = d.Connections
	case adminapi.PathPolicies:
		v = d.Policies
	default:
		return nil, errors.New("404 " + path)
	}
	return json.Marshal(v)
}

func fixture() *fakeGetter {
	root := adminapi.CertInfo{Type: adminapi.CertRoot, Serial: "1f", Subject: "CN=Ambit root CA", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	return &fakeGetter{dumps: map[string]adminapi.ConfigDump{
		"ztunnel-a": {
			Workloads: []adminapi.WorkloadDump{{UID: "1", Name: "client", Namespace: "demo", Node: "n1", Protocol: "HBONE", MTLSMode: "STRICT",
				Addresses: []string{"10.244.1.5", "fd00:10:244:1::5"}, Captured: true, ServiceAccount: "client"}},
			Certificates: []adminapi.CertDump{{Identity: "spiffe://cluster.local/ns/demo/sa/client", State: adminapi.CertValid, Chain: []adminapi.CertInfo{
				{Type: adminapi.CertLeaf, Serial: "a1", NotBefore: now.Add(-time.Minute), NotAfter: now.Add(12 * time.Hour)}, root}}},
			Connections: []adminapi.ConnDump{{ID: 1, Direction: "outbound", Protocol: "HBONE", Src: "10.244.1.5:40000", Dst: "10.244.2.7:8080",
				SrcPrincipal: "spiffe://cluster.local/ns/demo/sa/client", DstPrincipal: "spiffe://cluster.local/ns/demo/sa/server",
				Opened: now.Add(-90 * time.Second), BytesSent: 2048, BytesReceived: 4096}},
		},
		"ztunnel-b": {
			Workloads: []adminapi.WorkloadDump{{UID: "2", Name: "server", Namespace: "demo", Node: "n2", Protocol: "HBONE", MTLSMode: "STRICT",
				Addresses: []string{"10.244.2.7", "fd00:10:244:2::7"}, Captured: true, ServiceAccount: "server"}},
			Services: []adminapi.ServiceDump{{Name: "server", Namespace: "demo", Hostname: "server.demo.svc.cluster.local",
				VIPs: []string{"10.96.0.50", "fd00:96::50"}, Ports: map[string]uint32{"80": 8080}}},
			Policies: []adminapi.PolicyDump{{Name: "server-allow-client", Namespace: "demo", Scope: "WORKLOAD_SELECTOR", Action: "ALLOW", Rules: 1}},
		},
	}}
}

var targets = []Target{{"n1", "ambit-system", "ztunnel-a"}, {"n2", "ambit-system", "ztunnel-b"}}

func view(t *testing.T, name string) admincli.View {
	t.Helper()
	for _, v := range admincli.Views() {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no view %s", name)
	return admincli.View{}
}

// TestSameAsZtunnelAdmin: with one node and no sections the output is
// byte for byte what ztunnel-admin prints for the same admin answer.
func TestSameAsZtunnelAdmin(t *testing.T) {
	for _, v := range admincli.Views() {
		for _, output := range []string{admincli.OutputTable, admincli.OutputJSON} {
			t.Run(v.Name+"-"+output, func(t *testing.T) {
				g := fixture()
				var got bytes.Buffer
				err := Print(t.Context(), &got, g, targets[:1], Options{View: v, Output: output, Port: 15000, Now: now})
				if err != nil {
					t.Fatal(err)
				}
				body, _ := g.Get(t.Context(), "ambit-system", "ztunnel-a", 15000, v.Path)
				want, err := v.Format(body, output, now)
				if err != nil {
					t.Fatal(err)
				}
				if got.String() != string(want) {
					t.Fatalf("ambitctl ztunnel %s -o %s =\n%s\nztunnel-admin prints\n%s", v.Name, output, got.String(), want)
				}
			})
		}
	}
}

func TestPrintGolden(t *testing.T) {
	tests := []struct {
		golden string
		view   string
		output string
		fail   map[string]error
	}{
		{"workloads-nodes", "workloads", admincli.OutputTable, nil},
		{"certs-nodes", "certs", admincli.OutputTable, nil},
		{"services-nodes-json", "services", admincli.OutputJSON, nil},
		{"connections-node-down", "connections", admincli.OutputTable, map[string]error{"ztunnel-b": errors.New("port-forward to pod ambit-system/ztunnel-b: pod not running")}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			g := fixture()
			g.fail = tc.fail
			var out bytes.Buffer
			err := Print(t.Context(), &out, g, targets, Options{View: view(t, tc.view), Output: tc.output, Port: 15000, Now: now, Sections: true})
			if (err != nil) != (tc.fail != nil) {
				t.Fatalf("Print error = %v, want error: %v", err, tc.fail != nil)
			}
			if err != nil && !strings.Contains(err.Error(), "node n2: port-forward to pod ambit-system/ztunnel-b: pod not running") {
				t.Fatalf("Print error = %v, want it to name node n2 and the cause", err)
			}
			path := filepath.Join("testdata", tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if out.String() != string(want) {
				t.Fatalf("output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, out.String(), want)
			}
		})
	}
}

func TestPrintErrors(t *testing.T) {
	t.Run("bad output", func(t *testing.T) {
		err := Print(t.Context(), &bytes.Buffer{}, fixture(), targets, Options{View: view(t, "certs"), Output: "yaml", Port: 15000})
		if err == nil || !strings.Contains(err.Error(), `unknown output format "yaml"`) {
			t.Fatalf("Print = %v", err)
		}
	})
	t.Run("not admin JSON", func(t *testing.T) {
		g := getterFunc(func(context.Context, string, string, int, string) ([]byte, error) { return []byte("<html>"), nil })
		err := Print(t.Context(), &bytes.Buffer{}, g, targets[:1], Options{View: view(t, "certs"), Output: admincli.OutputTable, Port: 15000})
		if err == nil || !strings.Contains(err.Error(), "node n1: the answer of pod ambit-system/ztunnel-a port 15000 to GET /certs is not ztunnel admin JSON") {
			t.Fatalf("Print = %v", err)
		}
	})
}

type getterFunc func(ctx context.Context, ns, pod string, port int, path string) ([]byte, error)

func (f getterFunc) Get(ctx context.Context, ns, pod string, port int, path string) ([]byte, error) {
	return f(ctx, ns, pod, port, path)
}
