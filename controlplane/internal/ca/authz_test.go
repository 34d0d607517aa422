package ca

import (
	"errors"
	"strings"
	"testing"

	"ambit.dev/pkg/identity"
)

func TestAuthorize(t *testing.T) {
	policy := Policy{TrustDomain: testTD, NodeProxies: []ServiceAccountRef{{Namespace: testNS, Name: "ztunnel"}}}
	pods := testPods()
	ztA := Caller{Namespace: testNS, ServiceAccount: "ztunnel", PodName: "ztunnel-a", PodUID: "uid-zt-a", NodeName: "node-a"}
	ztB := Caller{Namespace: testNS, ServiceAccount: "ztunnel", PodName: "ztunnel-b", PodUID: "uid-zt-b", NodeName: "node-b"}
	ztUnbound := Caller{Namespace: testNS, ServiceAccount: "ztunnel"}
	app := Caller{Namespace: "ns1", ServiceAccount: "app", PodName: "app-1", NodeName: "node-a"}
	waypoint := Caller{Namespace: "ns1", ServiceAccount: "waypoint"} // not pod-bound

	tests := []struct {
		name    string
		caller  Caller
		id      identity.ID
		pods    []PodRef
		wantErr error    // nil: allowed
		wantMsg []string // substrings of the error
	}{
		{name: "node proxy, pod on its node", caller: ztA, id: mustID(t, testTD, "ns1", "sa1"), pods: pods.PodsOnNode("node-a")},
		{name: "node proxy, pod on another node", caller: ztB, id: mustID(t, testTD, "ns1", "sa1"), pods: pods.PodsOnNode("node-b"),
			wantErr: ErrPermissionDenied, wantMsg: []string{"no pod with service account sa1 in namespace ns1 runs on node node-b"}},
		{name: "node proxy, unknown service account", caller: ztA, id: mustID(t, testTD, "ns1", "nobody"), pods: pods.PodsOnNode("node-a"),
			wantErr: ErrPermissionDenied, wantMsg: []string{"no pod with service account nobody in namespace ns1 runs on node node-a"}},
		{name: "node proxy, right SA in another namespace", caller: ztA, id: mustID(t, testTD, "ns2", "sa1"), pods: pods.PodsOnNode("node-a"),
			wantErr: ErrPermissionDenied, wantMsg: []string{"in namespace ns2 runs on node node-a"}},
		{name: "node proxy, pod list of a different node is ignored", caller: ztA, id: mustID(t, testTD, "ns2", "sa2"), pods: pods.PodsOnNode("node-b"),
			wantErr: ErrPermissionDenied, wantMsg: []string{"runs on node node-a"}},
		{name: "node proxy without a pod-bound token", caller: ztUnbound, id: mustID(t, testTD, "ns1", "sa1"), pods: nil,
			wantErr: ErrPermissionDenied, wantMsg: []string{"node of", "is unknown", "pod-bound"}},
		{name: "node proxy, own identity", caller: ztUnbound, id: mustID(t, testTD, testNS, "ztunnel")},
		{name: "ordinary pod, own identity", caller: app, id: mustID(t, testTD, "ns1", "app"), pods: pods.PodsOnNode("node-a")},
		{name: "waypoint, own identity, token not pod-bound", caller: waypoint, id: mustID(t, testTD, "ns1", "waypoint")},
		{name: "ordinary pod asks for a pod on its own node", caller: app, id: mustID(t, testTD, "ns1", "sa1"), pods: pods.PodsOnNode("node-a"),
			wantErr: ErrPermissionDenied, wantMsg: []string{"may only obtain its own identity spiffe://cluster.local/ns/ns1/sa/app", "only node proxies (ambit-system/ztunnel)"}},
		{name: "ordinary pod with a ztunnel-like name in another namespace", caller: Caller{Namespace: "ns1", ServiceAccount: "ztunnel", NodeName: "node-a"},
			id: mustID(t, testTD, "ns1", "sa1"), pods: pods.PodsOnNode("node-a"), wantErr: ErrPermissionDenied, wantMsg: []string{"may only obtain its own identity"}},
		{name: "wrong trust domain", caller: ztA, id: mustID(t, "other.example", "ns1", "sa1"), pods: pods.PodsOnNode("node-a"),
			wantErr: identity.ErrCSRRejected, wantMsg: []string{`trust domain "other.example"`, `only for "cluster.local"`}},
		{name: "wrong trust domain, own identity", caller: app, id: mustID(t, "other.example", "ns1", "app"),
			wantErr: identity.ErrCSRRejected, wantMsg: []string{"trust domain"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Authorize(policy, tc.caller, tc.id, tc.pods)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Authorize = %v, want allowed", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Authorize = %v, want an error wrapping %v", err, tc.wantErr)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
}

func TestParseServiceAccountRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ServiceAccountRef
		ok   bool
	}{
		{in: "ambit-system/ztunnel", want: ServiceAccountRef{Namespace: "ambit-system", Name: "ztunnel"}, ok: true},
		{in: "ztunnel"},
		{in: "/ztunnel"},
		{in: "ns/"},
		{in: "a/b/c"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseServiceAccountRef(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseServiceAccountRef(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}
