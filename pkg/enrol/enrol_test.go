package enrol

import "testing"

func TestDecide(t *testing.T) {
	ambient := Namespace{Labels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}}
	plain := Namespace{}
	base := func() Pod { return Pod{Namespace: "demo", Containers: []string{"app"}} }
	with := func(mut func(*Pod)) func() Pod {
		return func() Pod { p := base(); mut(&p); return p }
	}
	cases := []struct {
		name string
		ns   Namespace
		pod  func() Pod
		want bool
	}{
		{"labelled namespace", ambient, base, true},
		{"unlabelled namespace", plain, base, false},
		{"namespace with another mode", Namespace{Labels: map[string]string{LabelDataplaneMode: "sidecar"}}, base, false},
		{"pod opt-out", ambient, with(func(p *Pod) { p.Labels = map[string]string{LabelDataplaneMode: DataplaneModeNone} }), false},
		{"pod label ambient alone does not enrol", plain, with(func(p *Pod) { p.Labels = map[string]string{LabelDataplaneMode: DataplaneModeAmbient} }), false},
		{"host network", ambient, with(func(p *Pod) { p.HostNetwork = true }), false},
		{"sidecar container", ambient, with(func(p *Pod) { p.Containers = append(p.Containers, SidecarContainerName) }), false},
		{"native sidecar init container", ambient, with(func(p *Pod) { p.InitContainers = []string{SidecarContainerName} }), false},
		{"sidecar status annotation", ambient, with(func(p *Pod) { p.Annotations = map[string]string{AnnotationSidecarStatus: "{}"} }), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := Decide(tc.ns, tc.pod())
			if got != tc.want {
				t.Fatalf("Decide = %v (%s), want %v", got, why, tc.want)
			}
			if why == "" {
				t.Fatal("Decide gave no reason")
			}
		})
	}
}
