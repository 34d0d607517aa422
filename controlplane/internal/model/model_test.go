package model

import (
	"net/netip"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

var (
	ambientNS = Namespace{Name: "demo", Labels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}}
	plainNS   = Namespace{Name: "demo"}
)

func basePod() Pod {
	return Pod{
		UID: "uid-1", Name: "web-7d4f8b-abcde", Namespace: "demo",
		ServiceAccount: "web", NodeName: "node-1", Phase: PodRunning,
		IPs: []netip.Addr{netip.MustParseAddr("10.244.1.7")}, Ready: true,
		Containers: []Container{{Name: "app"}},
	}
}

func TestEnrolled(t *testing.T) {
	withLabel := func(p Pod, v string) Pod { p.Labels = map[string]string{LabelDataplaneMode: v}; return p }
	cases := []struct {
		name string
		ns   Namespace
		pod  func() Pod
		want bool
	}{
		{"labelled namespace", ambientNS, basePod, true},
		{"unlabelled namespace", plainNS, basePod, false},
		{"unknown namespace", Namespace{}, basePod, false},
		{"namespace with another mode", Namespace{Name: "demo", Labels: map[string]string{LabelDataplaneMode: "sidecar"}}, basePod, false},
		{"pod opt-out", ambientNS, func() Pod { return withLabel(basePod(), DataplaneModeNone) }, false},
		{"pod label ambient alone does not enrol", plainNS, func() Pod { return withLabel(basePod(), DataplaneModeAmbient) }, false},
		{"pod label ambient in ambient namespace", ambientNS, func() Pod { return withLabel(basePod(), DataplaneModeAmbient) }, true},
		{"host network", ambientNS, func() Pod { p := basePod(); p.HostNetwork = true; return p }, false},
		{"sidecar container", ambientNS, func() Pod {
			p := basePod()
			p.Containers = append(p.Containers, Container{Name: SidecarContainerName})
			return p
		}, false},
		{"native sidecar init container", ambientNS, func() Pod {
			p := basePod()
			p.InitContainers = []Container{{Name: SidecarContainerName}}
			return p
		}, false},
		{"sidecar status annotation", ambientNS, func() Pod {
			p := basePod()
			p.Annotations = map[string]string{AnnotationSidecarStatus: `{"containers":["istio-proxy"]}`}
			return p
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := Enrolled(tc.ns, tc.pod())
			if got != tc.want {
				t.Fatalf("Enrolled = %v (%s), want %v", got, why, tc.want)
			}
			if why == "" {
				t.Fatal("Enrolled gave no reason")
			}
		})
	}
}

func TestIsWorkload(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Pod)
		want bool
	}{
		{"running with IPv4", func(*Pod) {}, true},
		{"running with IPv6", func(p *Pod) { p.IPs = []netip.Addr{netip.MustParseAddr("fd00:10:244::7")} }, true},
		{"running dual stack", func(p *Pod) {
			p.IPs = []netip.Addr{netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("fd00:10:244::7")}
		}, true},
		{"pending with IP", func(p *Pod) { p.Phase = PodPending }, false},
		{"running without IP", func(p *Pod) { p.IPs = nil }, false},
		{"succeeded", func(p *Pod) { p.Phase = PodSucceeded }, false},
		{"failed", func(p *Pod) { p.Phase = PodFailed }, false},
		{"no phase", func(p *Pod) { p.Phase = "" }, false},
		{"no uid", func(p *Pod) { p.UID = "" }, false},
		{"terminating is still a workload", func(p *Pod) { p.Terminating = true }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePod()
			tc.mod(&p)
			if got, why := IsWorkload(p); got != tc.want {
				t.Fatalf("IsWorkload = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

func TestWorkloadOwner(t *testing.T) {
	cases := []struct {
		name     string
		owner    *Owner
		labels   map[string]string
		wantName string
		wantType WorkloadType
	}{
		{"bare pod", nil, nil, "web-7d4f8b-abcde", TypePod},
		{"deployment replicaset", &Owner{Kind: "ReplicaSet", Name: "web-7d4f8b"}, map[string]string{LabelPodTemplateHash: "7d4f8b"}, "web", TypeDeployment},
		{"replicaset without template hash", &Owner{Kind: "ReplicaSet", Name: "web-rs"}, nil, "web-rs", TypeDeployment},
		{"replicaset hash not a suffix", &Owner{Kind: "ReplicaSet", Name: "web-rs"}, map[string]string{LabelPodTemplateHash: "zzz"}, "web-rs", TypeDeployment},
		{"statefulset", &Owner{Kind: "StatefulSet", Name: "db"}, nil, "db", TypeDeployment},
		{"daemonset", &Owner{Kind: "DaemonSet", Name: "agent"}, nil, "agent", TypeDeployment},
		{"job", &Owner{Kind: "Job", Name: "migrate"}, nil, "migrate", TypeJob},
		{"cronjob job", &Owner{Kind: "Job", Name: "backup-29012345"}, nil, "backup", TypeCronJob},
		{"job with short number", &Owner{Kind: "Job", Name: "migrate-2"}, nil, "migrate-2", TypeJob},
		{"unknown controller", &Owner{Kind: "Rollout", Name: "r"}, nil, "web-7d4f8b-abcde", TypePod},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePod()
			p.Owner, p.Labels = tc.owner, tc.labels
			name, typ := WorkloadOwner(p)
			if name != tc.wantName || typ != tc.wantType {
				t.Fatalf("WorkloadOwner = %q, %v; want %q, %v", name, typ, tc.wantName, tc.wantType)
			}
		})
	}
}

func TestCanonicalLabels(t *testing.T) {
	cases := []struct {
		name         string
		labels       map[string]string
		wantName     string
		wantRevision string
	}{
		{"no labels", nil, "web", "latest"},
		{"app and version", map[string]string{"app": "a", "version": "v1"}, "a", "v1"},
		{"kubernetes labels win over app", map[string]string{"app": "a", "version": "v1", LabelAppKubernetesName: "k", LabelAppKubernetesVersion: "v2"}, "k", "v2"},
		{"istio canonical labels win", map[string]string{LabelAppKubernetesName: "k", LabelCanonicalName: "c", LabelAppKubernetesVersion: "v2", LabelCanonicalRevision: "r"}, "c", "r"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CanonicalName(tc.labels, "web"); got != tc.wantName {
				t.Errorf("CanonicalName = %q, want %q", got, tc.wantName)
			}
			if got := CanonicalRevision(tc.labels); got != tc.wantRevision {
				t.Errorf("CanonicalRevision = %q, want %q", got, tc.wantRevision)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func podEP(name string, ready *bool, addrs ...string) Endpoint {
	ep := Endpoint{Ready: ready, TargetKind: "Pod", TargetRef: &ObjectRef{Namespace: "demo", Name: name}}
	for _, a := range addrs {
		ep.Addresses = append(ep.Addresses, netip.MustParseAddr(a))
	}
	return ep
}

func TestServiceMembers(t *testing.T) {
	svc := Service{Name: "web", Namespace: "demo", Hostname: "web.demo.svc.cluster.local", Ports: []ServicePort{
		{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPortName: "http"},
		{Name: "metrics", Protocol: ProtocolTCP, Port: 9090, TargetPort: 9090},
		{Name: "dns", Protocol: ProtocolUDP, Port: 53, TargetPort: 53},
	}}
	slicePorts := func(http uint32) []EndpointPort {
		return []EndpointPort{{Name: "http", Port: http, Protocol: ProtocolTCP}, {Name: "metrics", Port: 9090, Protocol: ProtocolTCP}, {Name: "dns", Port: 53, Protocol: ProtocolUDP}}
	}
	cases := []struct {
		name   string
		svc    Service
		slices []EndpointSlice
		want   map[ObjectRef][]PortMapping
	}{
		{
			name: "named target port resolved per pod (IPv4)",
			svc:  svc,
			slices: []EndpointSlice{
				{Name: "web-a", Namespace: "demo", ServiceName: "web", Ports: slicePorts(8080), Endpoints: []Endpoint{podEP("p1", ptr(true), "10.244.1.7")}},
				{Name: "web-b", Namespace: "demo", ServiceName: "web", Ports: slicePorts(8081), Endpoints: []Endpoint{podEP("p2", nil, "10.244.2.9")}},
			},
			want: map[ObjectRef][]PortMapping{
				{"demo", "p1"}: {{80, 8080}, {9090, 9090}},
				{"demo", "p2"}: {{80, 8081}, {9090, 9090}},
			},
		},
		{
			name: "dual stack slices merge (IPv4 and IPv6)",
			svc:  svc,
			slices: []EndpointSlice{
				{Name: "web-v4", Namespace: "demo", ServiceName: "web", Ports: slicePorts(8080), Endpoints: []Endpoint{podEP("p1", ptr(true), "10.244.1.7")}},
				{Name: "web-v6", Namespace: "demo", ServiceName: "web", Ports: slicePorts(8080), Endpoints: []Endpoint{podEP("p1", ptr(true), "fd00:10:244:1::7")}},
			},
			want: map[ObjectRef][]PortMapping{{"demo", "p1"}: {{80, 8080}, {9090, 9090}}},
		},
		{
			name: "not ready endpoints and non-pod endpoints are left out",
			svc:  svc,
			slices: []EndpointSlice{{Name: "web-a", Namespace: "demo", ServiceName: "web", Ports: slicePorts(8080), Endpoints: []Endpoint{
				podEP("p1", ptr(false), "10.244.1.7"),
				{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
				{Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TargetKind: "Node", TargetRef: &ObjectRef{Name: "node-1"}},
				podEP("p3", ptr(true), "fd00:10:244:1::9"),
			}}},
			want: map[ObjectRef][]PortMapping{{"demo", "p3"}: {{80, 8080}, {9090, 9090}}},
		},
		{
			name: "pod without the named port keeps the numeric ones",
			svc:  svc,
			slices: []EndpointSlice{{Name: "web-c", Namespace: "demo", ServiceName: "web",
				Ports:     []EndpointPort{{Name: "metrics", Port: 9090, Protocol: ProtocolTCP}},
				Endpoints: []Endpoint{podEP("p4", nil, "10.244.3.3")}}},
			want: map[ObjectRef][]PortMapping{{"demo", "p4"}: {{9090, 9090}}},
		},
		{
			name: "slice without ports falls back to numeric target ports",
			svc:  svc,
			slices: []EndpointSlice{{Name: "web-d", Namespace: "demo", ServiceName: "web",
				Endpoints: []Endpoint{podEP("p5", nil, "10.244.3.4")}}},
			want: map[ObjectRef][]PortMapping{{"demo", "p5"}: {{9090, 9090}}},
		},
		{
			name: "unnamed single port",
			svc:  Service{Name: "db", Namespace: "demo", Ports: []ServicePort{{Protocol: ProtocolTCP, Port: 5432, TargetPort: 15432}}},
			slices: []EndpointSlice{{Name: "db-a", Namespace: "demo", ServiceName: "db",
				Ports:     []EndpointPort{{Port: 15432, Protocol: ProtocolTCP}},
				Endpoints: []Endpoint{podEP("db-0", ptr(true), "fd00:10:244:1::5")}}},
			want: map[ObjectRef][]PortMapping{{"demo", "db-0"}: {{5432, 15432}}},
		},
		{
			name: "slice of another service is ignored",
			svc:  svc,
			slices: []EndpointSlice{{Name: "other-a", Namespace: "demo", ServiceName: "other", Ports: slicePorts(8080),
				Endpoints: []Endpoint{podEP("p1", nil, "10.244.1.7")}}},
			want: map[ObjectRef][]PortMapping{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ServiceMembers(tc.svc, tc.slices)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ServiceMembers =\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func TestWorkloadAddress(t *testing.T) {
	cfg := Config{TrustDomain: "cluster.local"}
	svcs := map[string][]PortMapping{"demo/web.demo.svc.cluster.local": {{80, 8080}}}
	cases := []struct {
		name       string
		ns         Namespace
		mod        func(*Pod)
		nodeExists bool
		policies   []string // selector policies that apply
		want       string   // prototext of the Workload
	}{
		{
			name: "enrolled IPv4", ns: ambientNS, mod: func(*Pod) {}, nodeExists: true,
			want: `uid:"uid-1" name:"web-7d4f8b-abcde" namespace:"demo" addresses:"\n\xf4\x01\x07" node:"node-1" service_account:"web" trust_domain:"cluster.local" tunnel_protocol:HBONE services:{key:"demo/web.demo.svc.cluster.local" value:{ports:{service_port:80 target_port:8080}}} canonical_name:"web" canonical_revision:"latest" workload_name:"web" workload_type:DEPLOYMENT`,
		},
		{
			name: "not enrolled IPv6, default service account, not ready", ns: plainNS,
			mod: func(p *Pod) {
				p.IPs = []netip.Addr{netip.MustParseAddr("fd00::7")}
				p.ServiceAccount = ""
				p.Ready = false
			},
			nodeExists: true,
			want:       `uid:"uid-1" name:"web-7d4f8b-abcde" namespace:"demo" addresses:"\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07" node:"node-1" service_account:"default" trust_domain:"cluster.local" services:{key:"demo/web.demo.svc.cluster.local" value:{ports:{service_port:80 target_port:8080}}} status:UNHEALTHY canonical_name:"web" canonical_revision:"latest" workload_name:"web" workload_type:DEPLOYMENT`,
		},
		{
			name: "selector policies listed", ns: ambientNS, mod: func(*Pod) {}, nodeExists: true,
			policies: []string{"demo/allow-web", "demo/peerauthentication:strict"},
			want:     `uid:"uid-1" name:"web-7d4f8b-abcde" namespace:"demo" addresses:"\n\xf4\x01\x07" node:"node-1" service_account:"web" trust_domain:"cluster.local" tunnel_protocol:HBONE services:{key:"demo/web.demo.svc.cluster.local" value:{ports:{service_port:80 target_port:8080}}} canonical_name:"web" canonical_revision:"latest" workload_name:"web" workload_type:DEPLOYMENT authorization_policies:"demo/allow-web" authorization_policies:"demo/peerauthentication:strict"`,
		},
		{
			name: "IPv4-mapped address sent as 4 bytes, node gone", ns: ambientNS,
			mod:        func(p *Pod) { p.IPs = []netip.Addr{netip.MustParseAddr("::ffff:10.244.1.7")} },
			nodeExists: false,
			want:       `uid:"uid-1" name:"web-7d4f8b-abcde" namespace:"demo" addresses:"\n\xf4\x01\x07" node:"node-1" service_account:"web" trust_domain:"cluster.local" tunnel_protocol:HBONE services:{key:"demo/web.demo.svc.cluster.local" value:{ports:{service_port:80 target_port:8080}}} status:UNHEALTHY canonical_name:"web" canonical_revision:"latest" workload_name:"web" workload_type:DEPLOYMENT`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePod()
			p.Owner = &Owner{Kind: "ReplicaSet", Name: "web-7d4f8b"}
			p.Labels = map[string]string{LabelPodTemplateHash: "7d4f8b"}
			tc.mod(&p)
			w, ok, why := DeriveWorkload(cfg, tc.ns, p, svcs, tc.nodeExists)
			if !ok {
				t.Fatalf("DeriveWorkload: not a workload: %s", why)
			}
			w.AuthorizationPolicies = tc.policies
			got := WorkloadAddress(w)
			if got.ResourceName() != "uid-1" {
				t.Errorf("resource name = %q, want uid-1", got.ResourceName())
			}
			want := &workloadv1alpha1.Workload{}
			if err := prototext.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			if !proto.Equal(got.GetWorkload(), want) {
				t.Fatalf("WorkloadAddress =\n%v\nwant\n%v", prototext.Format(got.GetWorkload()), prototext.Format(want))
			}
		})
	}
	t.Run("pending pod is no workload", func(t *testing.T) {
		p := basePod()
		p.Phase = PodPending
		if _, ok, _ := DeriveWorkload(cfg, ambientNS, p, nil, true); ok {
			t.Fatal("a Pending pod was derived as a workload")
		}
	})
}

func TestServiceAddress(t *testing.T) {
	cases := []struct {
		name string
		svc  Service
		want string
	}{
		{
			name: "dual stack VIPs, named, numeric and unset target ports, UDP dropped",
			svc: Service{Name: "web", Namespace: "demo", Hostname: Hostname("web", "demo", "cluster.local"),
				VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")},
				Ports: []ServicePort{
					{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPortName: "http"},
					{Name: "grpc", Protocol: ProtocolTCP, Port: 9000, TargetPort: 9001},
					{Name: "plain", Port: 7000},
					{Name: "dns", Protocol: ProtocolUDP, Port: 53, TargetPort: 53},
				}},
			want: `name:"web" namespace:"demo" hostname:"web.demo.svc.cluster.local" addresses:{address:"\x0a\x60\x00\x0a"} addresses:{address:"\xfd\x00\x00\x96\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\n"} ports:{service_port:80} ports:{service_port:9000 target_port:9001} ports:{service_port:7000 target_port:7000}`,
		},
		{
			name: "headless",
			svc:  Service{Name: "db", Namespace: "demo", Hostname: "db.demo.svc.cluster.local", Ports: []ServicePort{{Protocol: ProtocolTCP, Port: 5432, TargetPort: 5432}}},
			want: `name:"db" namespace:"demo" hostname:"db.demo.svc.cluster.local" ports:{service_port:5432 target_port:5432}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ServiceAddress(tc.svc)
			if got.ResourceName() != tc.svc.ResourceName() {
				t.Errorf("resource name = %q, want %q", got.ResourceName(), tc.svc.ResourceName())
			}
			want := &workloadv1alpha1.Service{}
			if err := prototext.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			if !proto.Equal(got.GetService(), want) {
				t.Fatalf("ServiceAddress =\n%v\nwant\n%v", prototext.Format(got.GetService()), prototext.Format(want))
			}
		})
	}
	if (Service{ExternalName: true}).Published() {
		t.Error("an ExternalName Service is published")
	}
}
