package workloadv1alpha1_test

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

func workloadAddress(uid string, ips ...string) *workloadv1alpha1.Address {
	w := &workloadv1alpha1.Workload{
		Uid:            uid,
		Name:           "web-7d4b9c-abcde",
		Namespace:      "default",
		Node:           "node-1",
		ServiceAccount: "web",
		TrustDomain:    "cluster.local",
		TunnelProtocol: workloadv1alpha1.TunnelProtocol_HBONE,
		Waypoint: &workloadv1alpha1.GatewayAddress{
			Destination: &workloadv1alpha1.GatewayAddress_Hostname{Hostname: &workloadv1alpha1.NamespacedHostname{
				Namespace: "default",
				Hostname:  "waypoint.default.svc.cluster.local",
			}},
			HboneMtlsPort: 15008,
		},
		Services: map[string]*workloadv1alpha1.PortList{
			"default/web.default.svc.cluster.local": {Ports: []*workloadv1alpha1.Port{{ServicePort: 80, TargetPort: 8080}}},
		},
		Status:                workloadv1alpha1.WorkloadStatus_UNHEALTHY,
		CanonicalName:         "web",
		CanonicalRevision:     "v1",
		WorkloadName:          "web",
		WorkloadType:          workloadv1alpha1.WorkloadType_DEPLOYMENT,
		AuthorizationPolicies: []string{"default/allow-frontend"},
		ClusterId:             "Kubernetes",
	}
	for _, ip := range ips {
		w.Addresses = append(w.Addresses, netip.MustParseAddr(ip).AsSlice())
	}
	return &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Workload{Workload: w}}
}

func TestAddressRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		addr     *workloadv1alpha1.Address
		wantName string
		wantIPs  []string
	}{
		{
			name:     "IPv4 workload",
			addr:     workloadAddress("0b6c6a6e-1111-4c3a-9e0e-000000000001", "10.244.1.7"),
			wantName: "0b6c6a6e-1111-4c3a-9e0e-000000000001",
			wantIPs:  []string{"10.244.1.7"},
		},
		{
			name:     "IPv6 workload",
			addr:     workloadAddress("0b6c6a6e-1111-4c3a-9e0e-000000000002", "fd00:10:244:1::7"),
			wantName: "0b6c6a6e-1111-4c3a-9e0e-000000000002",
			wantIPs:  []string{"fd00:10:244:1::7"},
		},
		{
			name:     "dual-stack workload",
			addr:     workloadAddress("0b6c6a6e-1111-4c3a-9e0e-000000000003", "10.244.1.8", "fd00:10:244:1::8"),
			wantName: "0b6c6a6e-1111-4c3a-9e0e-000000000003",
			wantIPs:  []string{"10.244.1.8", "fd00:10:244:1::8"},
		},
		{
			name: "service with IPv4 and IPv6 VIPs",
			addr: &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Service{Service: &workloadv1alpha1.Service{
				Name:      "web",
				Namespace: "default",
				Hostname:  "web.default.svc.cluster.local",
				Addresses: []*workloadv1alpha1.NetworkAddress{
					{Address: netip.MustParseAddr("10.96.0.10").AsSlice()},
					{Address: netip.MustParseAddr("fd00:10:96::a").AsSlice()},
				},
				Ports:           []*workloadv1alpha1.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 443}},
				SubjectAltNames: []string{"spiffe://cluster.local/ns/default/sa/web"},
				Waypoint: &workloadv1alpha1.GatewayAddress{
					Destination: &workloadv1alpha1.GatewayAddress_Address{Address: &workloadv1alpha1.NetworkAddress{
						Address: netip.MustParseAddr("10.96.0.20").AsSlice(),
					}},
					HboneMtlsPort: 15008,
				},
			}}},
			wantName: "default/web.default.svc.cluster.local",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire, err := proto.Marshal(tt.addr)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			var got workloadv1alpha1.Address
			if err := proto.Unmarshal(wire, &got); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !proto.Equal(tt.addr, &got) {
				t.Fatalf("round trip changed the message:\n sent %v\n got  %v", tt.addr, &got)
			}
			if n := got.ResourceName(); n != tt.wantName {
				t.Errorf("ResourceName() = %q, want %q", n, tt.wantName)
			}
			var gotIPs []string
			for _, b := range got.GetWorkload().GetAddresses() {
				ip, ok := netip.AddrFromSlice(b)
				if !ok {
					t.Fatalf("address %x is not 4 or 16 bytes", b)
				}
				if ip.Is4() && len(b) != 4 {
					t.Errorf("IPv4 address %s sent as %d bytes, want 4", ip, len(b))
				}
				gotIPs = append(gotIPs, ip.String())
			}
			if len(gotIPs) != len(tt.wantIPs) {
				t.Fatalf("addresses = %v, want %v", gotIPs, tt.wantIPs)
			}
			for i := range gotIPs {
				if gotIPs[i] != tt.wantIPs[i] {
					t.Errorf("addresses[%d] = %s, want %s", i, gotIPs[i], tt.wantIPs[i])
				}
			}

			// The Any that carries the resource in a DeltaDiscoveryResponse.
			a, err := anypb.New(tt.addr)
			if err != nil {
				t.Fatalf("anypb.New: %v", err)
			}
			const documented = "type.googleapis.com/ambit.workload.v1alpha1.Address"
			if a.GetTypeUrl() != documented || workloadv1alpha1.AddressTypeURL != documented {
				t.Errorf("type URL = %q, AddressTypeURL = %q, want %q", a.GetTypeUrl(), workloadv1alpha1.AddressTypeURL, documented)
			}
			var back workloadv1alpha1.Address
			if err := a.UnmarshalTo(&back); err != nil {
				t.Fatalf("Any.UnmarshalTo: %v", err)
			}
			if !proto.Equal(tt.addr, &back) {
				t.Errorf("Any round trip changed the message")
			}
		})
	}
}

func TestAuthorizationRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		authz    *workloadv1alpha1.Authorization
		wantName string
	}{
		{
			name: "access policy with IPv4 and IPv6 prefixes",
			authz: &workloadv1alpha1.Authorization{
				Name:      "allow-frontend",
				Namespace: "default",
				Scope:     workloadv1alpha1.Scope_WORKLOAD_SELECTOR,
				Action:    workloadv1alpha1.Action_ALLOW,
				Rules: []*workloadv1alpha1.Rule{{Clauses: []*workloadv1alpha1.Clause{{Matches: []*workloadv1alpha1.Match{{
					Principals:    []*workloadv1alpha1.StringMatch{{MatchType: &workloadv1alpha1.StringMatch_Exact{Exact: "cluster.local/ns/default/sa/frontend"}}},
					NotNamespaces: []*workloadv1alpha1.StringMatch{{MatchType: &workloadv1alpha1.StringMatch_Prefix{Prefix: "kube-"}}},
					SourceIps: []*workloadv1alpha1.IPPrefix{
						{Address: netip.MustParseAddr("10.244.0.0").AsSlice(), Length: 16},
						{Address: netip.MustParseAddr("fd00:10:244::").AsSlice(), Length: 56},
					},
					DestinationPorts:    []uint32{8080},
					NotDestinationPorts: []uint32{9090},
				}}}}}},
			},
			wantName: "default/allow-frontend",
		},
		{
			name: "peer authentication STRICT with a port override",
			authz: &workloadv1alpha1.Authorization{
				Name:      workloadv1alpha1.PeerAuthenticationName("strict"),
				Namespace: "default",
				Scope:     workloadv1alpha1.Scope_WORKLOAD_SELECTOR,
				PeerAuthentication: &workloadv1alpha1.PeerAuthentication{
					Mode:          workloadv1alpha1.MTLSMode_STRICT,
					PortLevelMtls: map[uint32]workloadv1alpha1.MTLSMode{9090: workloadv1alpha1.MTLSMode_PERMISSIVE},
				},
			},
			wantName: "default/peerauthentication:strict",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := anypb.New(tt.authz)
			if err != nil {
				t.Fatalf("anypb.New: %v", err)
			}
			const documented = "type.googleapis.com/ambit.workload.v1alpha1.Authorization"
			if a.GetTypeUrl() != documented || workloadv1alpha1.AuthorizationTypeURL != documented {
				t.Errorf("type URL = %q, AuthorizationTypeURL = %q, want %q", a.GetTypeUrl(), workloadv1alpha1.AuthorizationTypeURL, documented)
			}
			var got workloadv1alpha1.Authorization
			if err := a.UnmarshalTo(&got); err != nil {
				t.Fatalf("Any.UnmarshalTo: %v", err)
			}
			if !proto.Equal(tt.authz, &got) {
				t.Fatalf("round trip changed the message:\n sent %v\n got  %v", tt.authz, &got)
			}
			if n := got.ResourceName(); n != tt.wantName {
				t.Errorf("ResourceName() = %q, want %q", n, tt.wantName)
			}
		})
	}
}

func TestResourceNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"empty address", (&workloadv1alpha1.Address{}).ResourceName(), ""},
		{"nil address", (*workloadv1alpha1.Address)(nil).ResourceName(), ""},
		{"service key", workloadv1alpha1.ServiceResourceName("ns1", "a.ns1.svc.cluster.local"), "ns1/a.ns1.svc.cluster.local"},
		{"authorization key", workloadv1alpha1.AuthorizationResourceName("ns1", "deny-all"), "ns1/deny-all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	t.Run("peer authentication names", func(t *testing.T) {
		if !workloadv1alpha1.IsPeerAuthenticationName(workloadv1alpha1.PeerAuthenticationName("x")) {
			t.Error("IsPeerAuthenticationName(PeerAuthenticationName(x)) = false")
		}
		if workloadv1alpha1.IsPeerAuthenticationName("allow-frontend") {
			t.Error(`IsPeerAuthenticationName("allow-frontend") = true`)
		}
	})
}
