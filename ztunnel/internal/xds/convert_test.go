package xds

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/ztunnel/internal/model"
)

func TestConvertAddressErrors(t *testing.T) {
	ok := func() *workloadv1alpha1.Address { return wl("u1", "node1", "10.0.0.1", 0) }
	cases := []struct {
		name    string
		resName string
		mod     func(a *workloadv1alpha1.Address)
		wantErr string
	}{
		{name: "valid IPv4", resName: "u1"},
		{name: "valid IPv6", resName: "u1", mod: func(a *workloadv1alpha1.Address) {
			a.GetWorkload().Addresses = [][]byte{netip.MustParseAddr("fd00::1").AsSlice()}
		}},
		{name: "name mismatch", resName: "other", wantErr: `does not match`},
		{name: "empty address", resName: "u1", mod: func(a *workloadv1alpha1.Address) { a.Type = nil }, wantErr: "neither"},
		{name: "5-byte address", resName: "u1", mod: func(a *workloadv1alpha1.Address) { a.GetWorkload().Addresses = [][]byte{{1, 2, 3, 4, 5}} }, wantErr: "5 bytes"},
		{name: "IPv4-mapped IPv6", resName: "u1", mod: func(a *workloadv1alpha1.Address) {
			a.GetWorkload().Addresses = [][]byte{netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()}
		}, wantErr: "IPv4-mapped"},
		{name: "no service account", resName: "u1", mod: func(a *workloadv1alpha1.Address) { a.GetWorkload().ServiceAccount = "" }, wantErr: "required"},
		{name: "zero target port", resName: "u1", mod: func(a *workloadv1alpha1.Address) {
			a.GetWorkload().Services["ns1/echo.ns1.svc.cluster.local"].Ports[0].TargetPort = 0
		}, wantErr: "target_port 0"},
		{name: "waypoint without port", resName: "u1", mod: func(a *workloadv1alpha1.Address) {
			a.GetWorkload().Waypoint = &workloadv1alpha1.GatewayAddress{Destination: &workloadv1alpha1.GatewayAddress_Address{Address: &workloadv1alpha1.NetworkAddress{Address: []byte{10, 0, 3, 9}}}}
		}, wantErr: "hbone_mtls_port 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := ok()
			if tc.mod != nil {
				tc.mod(a)
			}
			_, err := convertAddress(tc.resName, a, "cluster.local")
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestBuildSnapshotResolves(t *testing.T) {
	conv := func(name string, a *workloadv1alpha1.Address) address {
		t.Helper()
		c, err := convertAddress(name, a, "cluster.local")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	strict := &workloadv1alpha1.Authorization{Name: "peerauthentication:default", Namespace: "ns1", Scope: workloadv1alpha1.Scope_NAMESPACE,
		PeerAuthentication: &workloadv1alpha1.PeerAuthentication{Mode: workloadv1alpha1.MTLSMode_STRICT}}
	cases := []struct {
		name  string
		addrs map[string]address
		auths map[string]*workloadv1alpha1.Authorization
		want  func(t *testing.T, ws []model.Workload)
	}{
		{name: "IPv4 address reused: first uid keeps it", addrs: map[string]address{
			"a": conv("a", wl("a", "n", "10.0.0.1", 0)), "b": conv("b", wl("b", "n", "10.0.0.1", 0)),
		}, want: func(t *testing.T, ws []model.Workload) {
			if len(ws[0].Addresses) != 1 || len(ws[1].Addresses) != 0 {
				t.Fatalf("addresses %v / %v", ws[0].Addresses, ws[1].Addresses)
			}
		}},
		{name: "IPv6 address reused: first uid keeps it", addrs: map[string]address{
			"a": conv("a", wl("a", "n", "fd00::1", 0)), "b": conv("b", wl("b", "n", "fd00::1", 0)),
		}, want: func(t *testing.T, ws []model.Workload) {
			if len(ws[0].Addresses) != 1 || len(ws[1].Addresses) != 0 {
				t.Fatalf("addresses %v / %v", ws[0].Addresses, ws[1].Addresses)
			}
		}},
		{name: "unknown service dropped from the workload", addrs: map[string]address{
			"a": conv("a", wl("a", "n", "10.0.0.1", 0)),
		}, want: func(t *testing.T, ws []model.Workload) {
			if len(ws[0].Services) != 0 {
				t.Fatalf("services %v", ws[0].Services)
			}
		}},
		{name: "waypoint hostname kept as the Service key", addrs: map[string]address{
			"a": conv("a", withWaypoint(wl("a", "n", "10.0.0.1", 0), "gw-ns", "gw.gw-ns.svc.cluster.local")),
		}, want: func(t *testing.T, ws []model.Workload) {
			want := model.Waypoint{Service: "gw-ns/gw.gw-ns.svc.cluster.local", Port: 15008}
			if ws[0].Waypoint == nil || *ws[0].Waypoint != want {
				t.Fatalf("waypoint %+v, want %+v (the Service, not its VIP, even before the Service arrives)", ws[0].Waypoint, want)
			}
		}},
		{name: "namespace STRICT peer authentication", addrs: map[string]address{
			"a": conv("a", wl("a", "n", "10.0.0.1", 0)),
		}, auths: map[string]*workloadv1alpha1.Authorization{strict.ResourceName(): strict}, want: func(t *testing.T, ws []model.Workload) {
			if ws[0].MTLSMode != model.MTLSStrict {
				t.Fatalf("mtls %s", ws[0].MTLSMode)
			}
		}},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := buildSnapshot(tc.addrs, tc.auths, log)
			if err != nil {
				t.Fatal(err)
			}
			tc.want(t, snap.Workloads())
		})
	}
}

func withWaypoint(a *workloadv1alpha1.Address, ns, host string) *workloadv1alpha1.Address {
	a.GetWorkload().Waypoint = &workloadv1alpha1.GatewayAddress{
		Destination:   &workloadv1alpha1.GatewayAddress_Hostname{Hostname: &workloadv1alpha1.NamespacedHostname{Namespace: ns, Hostname: host}},
		HboneMtlsPort: 15008,
	}
	return a
}
