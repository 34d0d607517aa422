package waypoint

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"ambit.dev/controlplane/internal/model"
)

// waypointGateway is a valid waypoint Gateway demo/wp; mod changes it.
func waypointGateway(mod ...func(*gwapiv1.Gateway)) *gwapiv1.Gateway {
	gw := &gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "wp", UID: types.UID("uid-wp"), Generation: 3},
		Spec: gwapiv1.GatewaySpec{GatewayClassName: model.WaypointClass, Listeners: []gwapiv1.Listener{{
			Name: "mesh", Port: 15008, Protocol: "HBONE",
		}}},
	}
	for _, m := range mod {
		m(gw)
	}
	return gw
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(*gwapiv1.Gateway)
		reason gwapiv1.GatewayConditionReason
		msg    string // substring of the message when not accepted
	}{
		{name: "valid", mod: func(*gwapiv1.Gateway) {}, reason: gwapiv1.GatewayReasonAccepted},
		{name: "valid with waypoint-for all", mod: func(g *gwapiv1.Gateway) { g.Labels = map[string]string{model.LabelWaypointFor: "all"} }, reason: gwapiv1.GatewayReasonAccepted},
		{name: "no listener", mod: func(g *gwapiv1.Gateway) { g.Spec.Listeners = nil }, reason: gwapiv1.GatewayReasonListenersNotValid, msg: "0 listeners"},
		{name: "two listeners", mod: func(g *gwapiv1.Gateway) {
			g.Spec.Listeners = append(g.Spec.Listeners, gwapiv1.Listener{Name: "http", Port: 80, Protocol: "HTTP"})
		}, reason: gwapiv1.GatewayReasonListenersNotValid, msg: "2 listeners"},
		{name: "wrong name", mod: func(g *gwapiv1.Gateway) { g.Spec.Listeners[0].Name = "hbone" }, reason: gwapiv1.GatewayReasonListenersNotValid, msg: `name "hbone"`},
		{name: "wrong port and protocol", mod: func(g *gwapiv1.Gateway) {
			g.Spec.Listeners[0].Port = 8080
			g.Spec.Listeners[0].Protocol = "HTTP"
		}, reason: gwapiv1.GatewayReasonListenersNotValid, msg: `port 8080, protocol "HTTP"`},
		{name: "tls", mod: func(g *gwapiv1.Gateway) { g.Spec.Listeners[0].TLS = &gwapiv1.ListenerTLSConfig{} }, reason: gwapiv1.GatewayReasonListenersNotValid, msg: "tls set"},
		{name: "requested address", mod: func(g *gwapiv1.Gateway) {
			g.Spec.Addresses = []gwapiv1.GatewaySpecAddress{{Value: "10.96.0.99"}}
		}, reason: gwapiv1.GatewayReasonUnsupportedAddress, msg: "spec.addresses"},
		{name: "bad waypoint-for", mod: func(g *gwapiv1.Gateway) { g.Labels = map[string]string{model.LabelWaypointFor: "pods"} }, reason: gwapiv1.GatewayReasonInvalidParameters, msg: "ambit.dev/waypoint-for"},
		{name: "name with a dot", mod: func(g *gwapiv1.Gateway) { g.Name = "wp.v2" }, reason: gwapiv1.GatewayReasonInvalid, msg: "cannot name the waypoint's Service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Validate(waypointGateway(tc.mod))
			if v.Reason != tc.reason || v.Accepted != (tc.reason == gwapiv1.GatewayReasonAccepted) {
				t.Fatalf("Validate = %+v, want reason %s", v, tc.reason)
			}
			if !strings.Contains(v.Message, tc.msg) || v.Message == "" {
				t.Errorf("message %q does not say %q", v.Message, tc.msg)
			}
		})
	}
}

func TestDesired(t *testing.T) {
	cfg := Config{Image: "localhost/ambit-waypoint:dev", PullPolicy: corev1.PullNever, TrustDomain: "cluster.local", ClusterDomain: "example.org",
		XDSAddress: "10.96.0.5:15012", ControlPlaneName: "ambit-controlplane.ambit-system.svc"}
	gw := waypointGateway(func(g *gwapiv1.Gateway) {
		g.Spec.Infrastructure = &gwapiv1.GatewayInfrastructure{
			Labels:      map[gwapiv1.LabelKey]gwapiv1.LabelValue{"team": "web", model.LabelDataplaneMode: "ambient"},
			Annotations: map[gwapiv1.AnnotationKey]gwapiv1.AnnotationValue{"example.com/note": "x"},
		}
	})
	objs := Desired(gw, cfg, ControlPlane{XDSAddress: "10.96.0.5:15012", CAAddress: "10.96.0.5:15017"})

	// The apply configurations are checked as the typed objects they
	// describe.
	var sa corev1.ServiceAccount
	var svc corev1.Service
	var dep appsv1.Deployment
	for _, c := range []struct {
		ac  any
		out any
	}{{objs.ServiceAccount, &sa}, {objs.Service, &svc}, {objs.Deployment, &dep}} {
		raw, err := json.Marshal(c.ac)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, c.out); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("metadata", func(t *testing.T) {
		for _, m := range []metav1.ObjectMeta{sa.ObjectMeta, svc.ObjectMeta, dep.ObjectMeta} {
			if m.Name != "wp" || m.Namespace != "demo" {
				t.Errorf("object %s/%s, want demo/wp", m.Namespace, m.Name)
			}
			ref := metav1.GetControllerOf(&m)
			if ref == nil || ref.UID != "uid-wp" || ref.Kind != "Gateway" || ref.APIVersion != "gateway.networking.k8s.io/v1" || ref.Name != "wp" {
				t.Errorf("%s: controller %+v, want the Gateway", m.Name, ref)
			}
			if m.Labels[LabelGatewayName] != "wp" || m.Labels[LabelGatewayClassName] != model.WaypointClass || m.Labels["team"] != "web" {
				t.Errorf("labels %v", m.Labels)
			}
			if m.Annotations["example.com/note"] != "x" {
				t.Errorf("annotations %v", m.Annotations)
			}
		}
	})
	t.Run("service", func(t *testing.T) {
		if len(svc.Spec.Ports) != 1 {
			t.Fatalf("ports %+v", svc.Spec.Ports)
		}
		p := svc.Spec.Ports[0]
		if p.Name != "mesh" || p.Port != 15008 || p.TargetPort.IntVal != 15008 || p.AppProtocol == nil || *p.AppProtocol != ServiceAppProtocol {
			t.Errorf("port %+v, want mesh 15008", p)
		}
		if len(svc.Spec.Selector) != 1 || svc.Spec.Selector[LabelGatewayName] != "wp" || svc.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("spec %+v", svc.Spec)
		}
	})
	t.Run("deployment", func(t *testing.T) {
		if dep.Spec.Replicas != nil {
			t.Errorf("replicas %d set; scaling must be left to the user", *dep.Spec.Replicas)
		}
		if sel := dep.Spec.Selector.MatchLabels; len(sel) != 1 || sel[LabelGatewayName] != "wp" {
			t.Errorf("selector %v", sel)
		}
		pod := dep.Spec.Template
		// Not captured by ztunnel, whatever spec.infrastructure says.
		if pod.Labels[model.LabelDataplaneMode] != model.DataplaneModeNone || pod.Labels[LabelGatewayName] != "wp" {
			t.Errorf("pod labels %v", pod.Labels)
		}
		if pod.Spec.ServiceAccountName != "wp" || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
			t.Errorf("service account %q, automount %v", pod.Spec.ServiceAccountName, pod.Spec.AutomountServiceAccountToken)
		}
		if len(pod.Spec.Containers) != 1 {
			t.Fatalf("containers %+v", pod.Spec.Containers)
		}
		c := pod.Spec.Containers[0]
		if c.Image != cfg.Image || c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["mesh"] != 15008 || ports["http-metrics"] != 15020 || ports["http-status"] != 15021 {
			t.Errorf("ports %v", ports)
		}
		if g := c.ReadinessProbe.HTTPGet; g == nil || g.Path != "/healthz/ready" || g.Port.IntVal != 15021 {
			t.Errorf("readiness %+v", c.ReadinessProbe)
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		for name, path := range map[string]string{EnvPodName: "metadata.name", EnvPodNamespace: "metadata.namespace", EnvPodIPs: "status.podIPs", EnvServiceAccount: "spec.serviceAccountName"} {
			if e := env[name]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
				t.Errorf("env %s = %+v, want from %s", name, e, path)
			}
		}
		for name, v := range map[string]string{EnvGateway: "demo/wp", EnvTrustDomain: "cluster.local", EnvClusterDomain: "example.org",
			EnvXDSAddress: "10.96.0.5:15012", EnvCAAddress: "10.96.0.5:15017", EnvControlPlaneName: "ambit-controlplane.ambit-system.svc",
			EnvRootCertFile: "/var/run/ambit/root/root-cert.pem", EnvTokenFile: TokenPath} {
			if env[name].Value != v {
				t.Errorf("env %s = %q, want %q", name, env[name].Value, v)
			}
		}
		// Exactly the variables the ambit-waypoint binary reads.
		var names []string
		for n := range env {
			names = append(names, n)
		}
		slices.Sort(names)
		want := []string{"AMBIT_CA_ADDRESS", "AMBIT_CLUSTER_DOMAIN", "AMBIT_CONTROL_PLANE_NAME", "AMBIT_GATEWAY", "AMBIT_POD_IPS", "AMBIT_POD_NAME",
			"AMBIT_POD_NAMESPACE", "AMBIT_ROOT_CERT_FILE", "AMBIT_SERVICE_ACCOUNT", "AMBIT_TOKEN_FILE", "AMBIT_TRUST_DOMAIN", "AMBIT_XDS_ADDRESS"}
		if !slices.Equal(names, want) {
			t.Errorf("env %v, want %v", names, want)
		}
		if len(pod.Spec.Volumes) != 2 || pod.Spec.Volumes[0].Projected == nil ||
			pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.Audience != TokenAudience ||
			pod.Spec.Volumes[1].ConfigMap == nil || pod.Spec.Volumes[1].ConfigMap.Name != "ambit-root-cert" {
			t.Errorf("volumes %+v", pod.Spec.Volumes)
		}
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = m.MountPath
		}
		if mounts["ambit-token"] != "/var/run/ambit/token" || mounts["ambit-root-cert"] != "/var/run/ambit/root" {
			t.Errorf("mounts %v", mounts)
		}
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("security context %+v", sc)
		}
	})
}

func TestStatus(t *testing.T) {
	accepted := Verdict{Accepted: true, Reason: gwapiv1.GatewayReasonAccepted, Message: "waypoint accepted"}
	svcWith := func(ips ...string) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIPs: ips}}
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
		return s
	}
	depWith := func(available int32) *appsv1.Deployment {
		return &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: available}}
	}
	type addr struct{ typ, value string }
	for _, tc := range []struct {
		name       string
		v          Verdict
		svc        *corev1.Service
		dep        *appsv1.Deployment
		programmed metav1.ConditionStatus
		reason     gwapiv1.GatewayConditionReason
		addrs      []addr
	}{
		{name: "programmed, IPv4", v: accepted, svc: svcWith("10.96.0.20"), dep: depWith(1),
			programmed: metav1.ConditionTrue, reason: gwapiv1.GatewayReasonProgrammed,
			addrs: []addr{{"IPAddress", "10.96.0.20"}, {"Hostname", "wp.demo.svc.cluster.local"}}},
		{name: "programmed, dual stack", v: accepted, svc: svcWith("fd00:96::20", "10.96.0.20"), dep: depWith(2),
			programmed: metav1.ConditionTrue, reason: gwapiv1.GatewayReasonProgrammed,
			addrs: []addr{{"IPAddress", "fd00:96::20"}, {"IPAddress", "10.96.0.20"}, {"Hostname", "wp.demo.svc.cluster.local"}}},
		{name: "no available replica", v: accepted, svc: svcWith("10.96.0.20"), dep: depWith(0),
			programmed: metav1.ConditionFalse, reason: gwapiv1.GatewayReasonPending,
			addrs: []addr{{"IPAddress", "10.96.0.20"}, {"Hostname", "wp.demo.svc.cluster.local"}}},
		{name: "no ClusterIP yet", v: accepted, svc: svcWith(), dep: depWith(1),
			programmed: metav1.ConditionFalse, reason: gwapiv1.GatewayReasonAddressNotAssigned,
			addrs: []addr{{"Hostname", "wp.demo.svc.cluster.local"}}},
		{name: "not created yet", v: accepted,
			programmed: metav1.ConditionFalse, reason: gwapiv1.GatewayReasonPending},
		{name: "not accepted", v: Verdict{Reason: gwapiv1.GatewayReasonListenersNotValid, Message: "bad"}, svc: svcWith("10.96.0.20"), dep: depWith(1),
			programmed: metav1.ConditionFalse, reason: gwapiv1.GatewayReasonInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Status(waypointGateway(), tc.v, tc.svc, tc.dep, "cluster.local")
			acc := findCondition(st.Conditions, "Accepted")
			if (acc.Status == metav1.ConditionTrue) != tc.v.Accepted || acc.Reason != string(tc.v.Reason) || acc.Message != tc.v.Message || acc.ObservedGeneration != 3 {
				t.Errorf("Accepted = %+v, want from %+v at generation 3", acc, tc.v)
			}
			p := findCondition(st.Conditions, "Programmed")
			if p.Status != tc.programmed || p.Reason != string(tc.reason) || p.Message == "" || p.ObservedGeneration != 3 {
				t.Errorf("Programmed = %+v, want %s %s", p, tc.programmed, tc.reason)
			}
			var got []addr
			for _, a := range st.Addresses {
				got = append(got, addr{string(*a.Type), a.Value})
			}
			if len(got) != len(tc.addrs) {
				t.Fatalf("addresses %v, want %v", got, tc.addrs)
			}
			for i := range got {
				if got[i] != tc.addrs[i] {
					t.Errorf("addresses %v, want %v", got, tc.addrs)
				}
			}
		})
	}
}

func TestNextStatus(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	ip := gwapiv1.IPAddressType
	want := gwapiv1.GatewayStatus{
		Addresses: []gwapiv1.GatewayStatusAddress{{Type: &ip, Value: "10.96.0.20"}},
		Conditions: []metav1.Condition{
			{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "ok", ObservedGeneration: 3},
			{Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed", Message: "1 available replica(s)", ObservedGeneration: 3},
		},
	}
	first, changed := NextStatus(gwapiv1.GatewayStatus{}, want, t0)
	if !changed || len(first.Conditions) != 2 || !first.Conditions[0].LastTransitionTime.Equal(&t0) || len(first.Addresses) != 1 {
		t.Fatalf("first NextStatus = %+v, %v", first, changed)
	}
	if _, changed := NextStatus(first, want, t1); changed {
		t.Error("applying the same status twice changed it")
	}
	// Programmed flips: its time moves, Accepted's does not; a condition
	// of another type is kept.
	first.Conditions = append(first.Conditions, metav1.Condition{Type: "Other", Status: metav1.ConditionTrue, Reason: "X", LastTransitionTime: t0})
	pending := *want.DeepCopy()
	pending.Conditions[1] = metav1.Condition{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Pending", Message: "no replica", ObservedGeneration: 3}
	next, changed := NextStatus(first, pending, t1)
	if !changed {
		t.Fatal("a flipped condition is no change")
	}
	if a := findCondition(next.Conditions, "Accepted"); !a.LastTransitionTime.Equal(&t0) {
		t.Errorf("Accepted time %v, want %v", a.LastTransitionTime, t0)
	}
	if p := findCondition(next.Conditions, "Programmed"); p.Status != metav1.ConditionFalse || !p.LastTransitionTime.Equal(&t1) {
		t.Errorf("Programmed = %+v, want False at %v", p, t1)
	}
	if o := findCondition(next.Conditions, "Other"); o.Status != metav1.ConditionTrue {
		t.Error("a condition of another type was dropped")
	}
	// Only the addresses change.
	moved := *want.DeepCopy()
	moved.Addresses[0].Value = "fd00:96::20"
	if next, changed := NextStatus(first, moved, t1); !changed || next.Addresses[0].Value != "fd00:96::20" {
		t.Errorf("address change: %+v, %v", next.Addresses, changed)
	}
}

func TestResolveControlPlane(t *testing.T) {
	cfg := Config{ControlPlaneName: "ambit-controlplane.ambit-system.svc", ClusterDomain: "cluster.local",
		XDSAddress: "ambit-controlplane.ambit-system.svc:15012", CAAddress: "ambit-controlplane.ambit-system.svc.cluster.local:15017"}
	for _, tc := range []struct {
		name      string
		cfg       Config
		clusterIP string
		want      ControlPlane
	}{
		{"IPv4 ClusterIP replaces the DNS name", cfg, "10.96.0.5", ControlPlane{XDSAddress: "10.96.0.5:15012", CAAddress: "10.96.0.5:15017"}},
		{"IPv6 ClusterIP", cfg, "fd00:96::5", ControlPlane{XDSAddress: "[fd00:96::5]:15012", CAAddress: "[fd00:96::5]:15017"}},
		{"no Service: DNS", cfg, "", ControlPlane{XDSAddress: cfg.XDSAddress, CAAddress: cfg.CAAddress}},
		{"headless: DNS", cfg, "None", ControlPlane{XDSAddress: cfg.XDSAddress, CAAddress: cfg.CAAddress}},
		{"another host is kept", Config{ControlPlaneName: cfg.ControlPlaneName, XDSAddress: "192.0.2.7:15012", CAAddress: "cp.example.org:15017"}, "10.96.0.5",
			ControlPlane{XDSAddress: "192.0.2.7:15012", CAAddress: "cp.example.org:15017"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ResolveControlPlane(tc.cfg, tc.clusterIP); got != tc.want {
				t.Errorf("ResolveControlPlane = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRootCertConfigMapFor(t *testing.T) {
	raw, err := json.Marshal(RootCertConfigMapFor(waypointGateway(), "PEM"))
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Namespace != "demo" || cm.Name != "ambit-root-cert" || cm.Data["root-cert.pem"] != "PEM" {
		t.Errorf("ConfigMap %+v", cm)
	}
	// Shared by the namespace's waypoints: owned, not controlled.
	if len(cm.OwnerReferences) != 1 || cm.OwnerReferences[0].UID != "uid-wp" || metav1.GetControllerOf(&cm) != nil {
		t.Errorf("owner references %+v", cm.OwnerReferences)
	}
}

// TestStatusAccessLogSampling: the ambit.dev/access-log-sampling
// annotation gets a condition saying whether it applies (XDS.md §13).
func TestStatusAccessLogSampling(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"}}}
	dep := &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: 1}}
	accepted := Verdict{Accepted: true, Reason: gwapiv1.GatewayReasonAccepted, Message: "ok"}
	for _, tc := range []struct {
		name, value string
		set         bool
		status      metav1.ConditionStatus
		reason      gwapiv1.GatewayConditionReason
		message     string
	}{
		{name: "unset: no condition"},
		{name: "valid", value: "10", set: true, status: metav1.ConditionTrue, reason: ReasonSamplingApplied, message: "10%"},
		{name: "with percent sign", value: "0%", set: true, status: metav1.ConditionTrue, reason: ReasonSamplingApplied, message: "0%"},
		{name: "too large", value: "150", set: true, status: metav1.ConditionFalse, reason: ReasonInvalidSampling, message: `"150" is not a percentage 0-100`},
		{name: "not a number", value: "half", set: true, status: metav1.ConditionFalse, reason: ReasonInvalidSampling, message: "logging 100%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := waypointGateway()
			if tc.set {
				gw.Annotations = map[string]string{model.AnnotationAccessLogSampling: tc.value}
			}
			st := Status(gw, accepted, svc, dep, "cluster.local")
			var c *metav1.Condition
			for i := range st.Conditions {
				if st.Conditions[i].Type == string(ConditionAccessLogSampling) {
					c = &st.Conditions[i]
				}
			}
			if !tc.set {
				if c != nil {
					t.Fatalf("condition %+v without the annotation", c)
				}
				return
			}
			if c == nil || c.Status != tc.status || c.Reason != string(tc.reason) || !strings.Contains(c.Message, tc.message) || c.ObservedGeneration != 3 {
				t.Fatalf("condition %+v, want %s %s with %q", c, tc.status, tc.reason, tc.message)
			}
		})
	}
}

// TestClassDescriptionFitsTheCRD: the API server refuses a GatewayClass
// whose description is longer than the Gateway API CRD allows, and the
// class would never be created.
func TestClassDescriptionFitsTheCRD(t *testing.T) {
	raw, err := os.ReadFile("../../../deploy/charts/ambit/files/gateway-api/gateway.networking.k8s.io_gatewayclasses.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties struct {
									Description struct{ MaxLength int } `json:"description"`
								}
							}
						}
					} `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, v := range crd.Spec.Versions {
		max := v.Schema.OpenAPIV3Schema.Properties.Spec.Properties.Description.MaxLength
		if max == 0 {
			continue
		}
		checked++
		if len(ClassDescription) > max {
			t.Errorf("ClassDescription is %d characters; GatewayClass %s allows %d", len(ClassDescription), v.Name, max)
		}
	}
	if checked == 0 {
		t.Fatal("no maxLength of spec.description found in the GatewayClass CRD")
	}
}
