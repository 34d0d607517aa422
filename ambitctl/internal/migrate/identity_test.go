package migrate

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/ztunnel/pkg/adminapi"
)

func identityPod(name, sa string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: map[string]string{"ambit.dev/redirection": "enabled"}},
		Spec:   corev1.PodSpec{NodeName: "n1", ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}

func servingZtunnels(mut ...func(*adminapi.ConfigDump)) Ztunnels {
	d := &adminapi.ConfigDump{
		Workloads: []adminapi.WorkloadDump{
			{Name: "a", Namespace: "shop", ServiceAccount: "reviews", Captured: true},
			{Name: "a", Namespace: "other", ServiceAccount: "x", Captured: true},
		},
		Certificates: []adminapi.CertDump{{Identity: "spiffe://example.org/ns/shop/sa/reviews", State: adminapi.CertValid}},
	}
	for _, m := range mut {
		m(d)
	}
	return Ztunnels{TrustDomain: "example.org", Nodes: map[string]ZtunnelState{"n1": {Pod: "ambit-system/zt-1", Dump: d}}}
}

func TestIdentityProblem(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.Pod
		z    Ztunnels
		want string
	}{
		{"served", identityPod("a", "reviews"), servingZtunnels(), ""},
		{"no ztunnel on the node", identityPod("a", "reviews"), Ztunnels{TrustDomain: "example.org"},
			"no ztunnel runs on node n1"},
		{"ztunnel unreadable", identityPod("a", "reviews"),
			Ztunnels{Nodes: map[string]ZtunnelState{"n1": {Pod: "ambit-system/zt-1", DumpErr: errors.New("port-forward refused")}}},
			"cannot read ztunnel ambit-system/zt-1 on node n1: port-forward refused"},
		{"unknown to ztunnel", identityPod("b", "reviews"), servingZtunnels(),
			"ztunnel ambit-system/zt-1 does not know the pod yet"},
		{"known, not handed over", identityPod("a", "reviews"), servingZtunnels(func(d *adminapi.ConfigDump) { d.Workloads[0].Captured = false }),
			"ztunnel ambit-system/zt-1 does not serve the pod yet"},
		{"other service account", identityPod("a", "ratings"), servingZtunnels(),
			`ztunnel ambit-system/zt-1 has it as service account "reviews", the pod runs as "ratings"`},
		{"default service account", identityPod("a", ""), servingZtunnels(func(d *adminapi.ConfigDump) { d.Workloads[0].ServiceAccount = "default" }),
			"ztunnel ambit-system/zt-1 holds no certificate for spiffe://example.org/ns/shop/sa/default yet"},
		{"wrong trust domain", identityPod("a", "reviews"), func() Ztunnels { z := servingZtunnels(); z.TrustDomain = "corp.example"; return z }(),
			"ztunnel ambit-system/zt-1 holds no certificate for spiffe://corp.example/ns/shop/sa/reviews yet"},
		{"certificate pending", identityPod("a", "reviews"), servingZtunnels(func(d *adminapi.ConfigDump) {
			d.Certificates[0].State, d.Certificates[0].LastError = adminapi.CertPending, "CA unreachable"
		}), "ztunnel ambit-system/zt-1's certificate for spiffe://example.org/ns/shop/sa/reviews is Pending (CA unreachable)"},
		{"certificate expired", identityPod("a", "reviews"), servingZtunnels(func(d *adminapi.ConfigDump) { d.Certificates[0].State = adminapi.CertExpired }),
			"ztunnel ambit-system/zt-1's certificate for spiffe://example.org/ns/shop/sa/reviews is Expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IdentityProblem(tc.pod, tc.z); !strings.HasPrefix(got, tc.want) || (tc.want == "" && got != "") {
				t.Errorf("IdentityProblem = %q, want %q…", got, tc.want)
			}
		})
	}
}

func TestVerifyWithZtunnels(t *testing.T) {
	ambient := map[string]string{"ambit.dev/dataplane-mode": "ambient"}
	pending := identityPod("p", "reviews")
	pending.Annotations["ambit.dev/redirection"] = "pending"
	z := servingZtunnels()
	tests := []struct {
		name string
		pods []corev1.Pod
		ok   bool
		line string
	}{
		{"served", []corev1.Pod{identityPod("a", "reviews")}, true, "1/1 pods captured, 1/1 served by ztunnel with their identity"},
		{"captured, not served", []corev1.Pod{identityPod("a", "reviews"), identityPod("b", "reviews")}, false,
			"2/2 pods captured, 1/2 served by ztunnel with their identity; b: ztunnel ambit-system/zt-1 does not know the pod yet"},
		// A pod not captured yet is reported once, for its capture.
		{"not captured", []corev1.Pod{identityPod("a", "reviews"), pending}, false,
			"1/2 pods captured, 1/1 served by ztunnel with their identity; p: capture pending"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, line := Verify(ambient, tc.pods, "ambit-system", nil, &z)
			if ok != tc.ok || !strings.HasPrefix(line, tc.line) {
				t.Errorf("Verify = %v %q, want %v %q…", ok, line, tc.ok, tc.line)
			}
		})
	}
}

const metricsText = `# HELP istio_tcp_connections_opened_total TCP connections opened.
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://example.org/ns/shop/sa/reviews",destination_workload_namespace="shop",reporter="destination",source_principal="spiffe://example.org/ns/web/sa/client"} 40
istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://example.org/ns/shop/sa/reviews",destination_workload_namespace="shop",reporter="destination",source_principal="spiffe://example.org/ns/web/sa/admin"} 2
istio_tcp_connections_opened_total{connection_security_policy="none",destination_principal="spiffe://example.org/ns/shop/sa/reviews",destination_workload_namespace="shop",reporter="destination",source_principal="unknown"} 3
istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://example.org/ns/shop/sa/reviews",destination_workload_namespace="shop",reporter="source",source_principal="spiffe://example.org/ns/web/sa/client"} 40
istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://example.org/ns/other/sa/x",destination_workload_namespace="other",reporter="destination",source_principal="spiffe://example.org/ns/web/sa/client"} 9
istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://example.org/ns/shop/sa/old",destination_workload_namespace="shop",reporter="destination",source_principal="spiffe://example.org/ns/web/sa/client"} 0
# TYPE ambit_ztunnel_active_connections gauge
ambit_ztunnel_active_connections 1
`

func TestInboundTraffic(t *testing.T) {
	z := Ztunnels{Nodes: map[string]ZtunnelState{
		"n1": {Metrics: []byte(metricsText)},
		"n2": {Metrics: []byte(`istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_principal="spiffe://example.org/ns/shop/sa/ratings",destination_workload_namespace="shop",reporter="destination",source_principal="spiffe://example.org/ns/web/sa/client"} 5` + "\n")},
		"n3": {},
	}}
	got, err := InboundTraffic("shop", z)
	if err != nil {
		t.Fatal(err)
	}
	want := []Inbound{
		{Identity: "spiffe://example.org/ns/shop/sa/ratings", MutualTLS: 5, Sources: []string{"spiffe://example.org/ns/web/sa/client"}},
		{Identity: "spiffe://example.org/ns/shop/sa/reviews", MutualTLS: 42, Plaintext: 3,
			Sources: []string{"spiffe://example.org/ns/web/sa/admin", "spiffe://example.org/ns/web/sa/client"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("InboundTraffic =\n%+v\nwant\n%+v", got, want)
	}

	z.Nodes["n4"] = ZtunnelState{Metrics: []byte("not { metrics")}
	got, err = InboundTraffic("shop", z)
	if err == nil || !strings.Contains(err.Error(), "node n4") || len(got) != 2 {
		t.Errorf("with an unparsable node: %v, %v", got, err)
	}
}

func TestTrafficReport(t *testing.T) {
	reviews := "spiffe://example.org/ns/shop/sa/reviews"
	tests := []struct {
		name     string
		traffic  []Inbound
		expected []string
		want     []string
	}{
		{"none yet", nil, []string{reviews}, []string{"no inbound connections to the namespace through ztunnel yet"}},
		{"mTLS and plaintext", []Inbound{{Identity: reviews, MutualTLS: 42, Plaintext: 3, Sources: []string{"spiffe://example.org/ns/web/sa/client"}}},
			[]string{reviews},
			[]string{"inbound to " + reviews + ": 42 over HBONE (mutual TLS) from spiffe://example.org/ns/web/sa/client, 3 plaintext (PERMISSIVE lets peers outside the mesh in)"}},
		{"an identity no pod has now", []Inbound{{Identity: "spiffe://example.org/ns/shop/sa/old", MutualTLS: 1}}, []string{reviews},
			[]string{"inbound to spiffe://example.org/ns/shop/sa/old: 1 over HBONE (mutual TLS) — not the identity of any pod of the namespace now"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := TrafficReport(tc.traffic, tc.expected)
			if len(got) != len(tc.want) {
				t.Fatalf("TrafficReport = %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("line %d = %q, want %q…", i, got[i], tc.want[i])
				}
			}
		})
	}
}
