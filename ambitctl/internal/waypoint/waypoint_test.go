package waypoint

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestGatewayGolden(t *testing.T) {
	tests := []struct {
		golden, ns, name, forTraffic string
	}{
		{"gateway-service", "demo", DefaultName, ForService},
		{"gateway-all", "shop", "edge", ForAll},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			u := Gateway(tc.ns, tc.name, tc.forTraffic)
			b, err := yaml.Marshal(u.Object)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, b)
			// What apply writes is what the rest of ambitctl reads back.
			i := FromObject(u)
			if i.Class != Class || i.For != tc.forTraffic || i.Ref() != tc.ns+"/"+tc.name || i.Programmed() {
				t.Errorf("FromObject(Gateway) = %+v", i)
			}
		})
	}
}

func TestParseFor(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{{"service", false}, {"workload", false}, {"all", false}, {"", true}, {"Service", true}, {"pods", true}} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseFor(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseFor(%q) = %q, %v", tc.in, got, err)
			}
			if err == nil && got != tc.in {
				t.Errorf("ParseFor(%q) = %q", tc.in, got)
			}
			if err != nil && !strings.Contains(err.Error(), "service") {
				t.Errorf("error does not name the valid values: %v", err)
			}
		})
	}
}

// gw builds a Gateway as the apiserver returns it, with status.
func gw(ns, name, class string, labels map[string]string, conds []Condition, addrs ...string) *unstructured.Unstructured {
	u := Gateway(ns, name, ForService)
	u.SetLabels(labels)
	_ = unstructured.SetNestedField(u.Object, class, "spec", "gatewayClassName")
	var cs, as []any
	for _, c := range conds {
		cs = append(cs, map[string]any{"type": c.Type, "status": c.Status, "reason": c.Reason, "message": c.Message})
	}
	for _, a := range addrs {
		typ := "IPAddress"
		if strings.Contains(a, ".svc.") {
			typ = "Hostname"
		}
		as = append(as, map[string]any{"type": typ, "value": a})
	}
	if cs != nil || as != nil {
		u.Object["status"] = map[string]any{"conditions": cs, "addresses": as}
	}
	return u
}

var (
	accepted   = Condition{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "waypoint accepted"}
	programmed = Condition{Type: ConditionProgrammed, Status: "True", Reason: "Programmed", Message: "1/1 replicas available"}
	pending    = Condition{Type: ConditionProgrammed, Status: "False", Reason: "Pending", Message: "0/1 replicas available"}
)

func TestFromObject(t *testing.T) {
	tests := []struct {
		name           string
		u              *unstructured.Unstructured
		wantFor, state string
		wantAddrs      []string
		wantProgress   string
	}{
		{"programmed IPv4", gw("demo", "waypoint", Class, nil, []Condition{accepted, programmed}, "10.96.0.20", "waypoint.demo.svc.cluster.local"),
			ForService, "True", []string{"10.96.0.20", "waypoint.demo.svc.cluster.local"}, "waypoint demo/waypoint is Programmed (address 10.96.0.20, waypoint.demo.svc.cluster.local)"},
		{"programmed IPv6, for all", gw("demo", "waypoint", Class, map[string]string{LabelWaypointFor: ForAll}, []Condition{programmed}, "fd00:10:96::20"),
			ForAll, "True", []string{"fd00:10:96::20"}, "waypoint demo/waypoint is Programmed (address fd00:10:96::20)"},
		{"pending", gw("demo", "waypoint", Class, nil, []Condition{accepted, pending}),
			ForService, "False", nil, "waiting for waypoint demo/waypoint: Programmed=False Pending: 0/1 replicas available"},
		{"no status", gw("demo", "waypoint", Class, nil, nil),
			ForService, "-", nil, "waiting for waypoint demo/waypoint: no Programmed condition yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			i := FromObject(tc.u)
			if i.For != tc.wantFor || i.ProgrammedState() != tc.state || !slices.Equal(i.Addresses, tc.wantAddrs) {
				t.Errorf("FromObject = %+v; want for %s, programmed %s, addresses %v", i, tc.wantFor, tc.state, tc.wantAddrs)
			}
			if i.Programmed() != (tc.state == "True") {
				t.Errorf("Programmed() = %v", i.Programmed())
			}
			if got := Progress(i); !strings.HasPrefix(got, tc.wantProgress) {
				t.Errorf("Progress = %q, want prefix %q", got, tc.wantProgress)
			}
		})
	}
}

func TestBound(t *testing.T) {
	use := func(name string, ns ...string) map[string]string {
		l := map[string]string{LabelUseWaypoint: name}
		if len(ns) > 0 {
			l[LabelUseWaypointNamespace] = ns[0]
		}
		return l
	}
	objs := []Object{
		{Kind: KindPod, Namespace: "demo", Name: "web-1", Labels: use("waypoint")},
		{Kind: KindService, Namespace: "demo", Name: "web", Labels: use("waypoint")},
		{Kind: KindNamespace, Name: "demo", Labels: use("waypoint")},
		{Kind: KindService, Namespace: "demo", Name: "db", Labels: use(UseWaypointNone)},
		{Kind: KindService, Namespace: "demo", Name: "api", Labels: use("other")},
		{Kind: KindService, Namespace: "demo", Name: "elsewhere", Labels: use("waypoint", "shared")},
		{Kind: KindService, Namespace: "shop", Name: "cart", Labels: use("waypoint", "demo")},
		{Kind: KindService, Namespace: "shop", Name: "own", Labels: use("waypoint")},
		{Kind: KindNamespace, Name: "shop", Labels: use("waypoint", "demo")},
		{Kind: KindNamespace, Name: "plain"},
	}
	tests := []struct {
		name, ns, gw string
		want         []string
	}{
		{"waypoint in demo", "demo", "waypoint", []string{"namespace demo", "namespace shop", "service demo/web", "service shop/cart", "pod demo/web-1"}},
		{"same name in shop", "shop", "waypoint", []string{"service shop/own"}},
		{"shared namespace", "shared", "waypoint", []string{"service demo/elsewhere"}},
		{"unused", "demo", "edge", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, o := range Bound(tc.ns, tc.gw, objs) {
				got = append(got, o.Ref())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Bound(%s/%s) = %v, want %v", tc.ns, tc.gw, got, tc.want)
			}
		})
	}
}

func infos(us ...*unstructured.Unstructured) []Info {
	var out []Info
	for _, u := range us {
		out = append(out, FromObject(u))
	}
	return out
}

func TestRenderListGolden(t *testing.T) {
	tests := []struct {
		golden string
		gws    []Info
		scope  string
	}{
		{"list", infos(
			gw("shop", "waypoint", Class, map[string]string{LabelWaypointFor: ForAll}, []Condition{accepted, programmed}, "fd00:10:96::30"),
			gw("demo", "waypoint", Class, nil, []Condition{accepted, programmed}, "10.96.0.20", "waypoint.demo.svc.cluster.local"),
			gw("demo", "edge", "other-gateways", nil, []Condition{programmed}, "10.96.0.99"),
			gw("demo", "new", Class, map[string]string{LabelWaypointFor: ForWorkload}, nil),
			gw("demo", "busy", Class, nil, []Condition{accepted, pending}),
		), "in any namespace"},
		{"list-none", infos(gw("demo", "edge", "other-gateways", nil, nil)), "in namespace demo"},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			var b bytes.Buffer
			if err := RenderList(&b, tc.gws, tc.scope); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, b.Bytes())
		})
	}
}

func TestRenderStatusGolden(t *testing.T) {
	bound := []Object{
		{Kind: KindNamespace, Name: "demo"},
		{Kind: KindService, Namespace: "demo", Name: "web"},
		{Kind: KindPod, Namespace: "shop", Name: "cart-0"},
	}
	tests := []struct {
		golden string
		s      Status
	}{
		{"status-programmed", Status{
			Gateway: FromObject(gw("demo", "waypoint", Class, nil, []Condition{accepted, programmed}, "10.96.0.20", "fd00:10:96::20")),
			Pods:    []Pod{{Name: "waypoint-7c9f-abcde", Node: "n1", Phase: "Running", Ready: true}, {Name: "waypoint-7c9f-fghij", Phase: "Pending"}},
			Bound:   bound}},
		{"status-pending", Status{
			Gateway: FromObject(gw("demo", "waypoint", Class, map[string]string{LabelWaypointFor: ForWorkload}, []Condition{accepted, pending})),
			Bound:   bound[1:2]}},
		{"status-unseen", Status{Gateway: FromObject(gw("shop", "edge", Class, nil, nil))}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			var b bytes.Buffer
			if err := RenderStatus(&b, tc.s); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, b.Bytes())
		})
	}
}

func TestTimeoutLines(t *testing.T) {
	tests := []struct {
		name string
		i    Info
		want []string
	}{
		{"unseen", FromObject(gw("demo", "waypoint", Class, nil, nil)), []string{"no waypoint controller has seen it", "ambitctl check"}},
		{"pending", FromObject(gw("demo", "waypoint", Class, nil, []Condition{accepted, pending})),
			[]string{"  Programmed=False Pending: 0/1 replicas available", "kubectl -n demo describe deployment waypoint", "kubectl -n demo logs deployment/waypoint"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(TimeoutLines(tc.i), "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("TimeoutLines lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestApplyAndDeleteLines(t *testing.T) {
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"apply created, enrolled", ApplyLines("demo", "waypoint", ForService, true, true, false),
			[]string{"waypoint demo/waypoint created", "namespace demo labelled ambit.dev/use-waypoint=waypoint: its Services now go through it"}},
		{"apply again", ApplyLines("demo", "waypoint", ForAll, false, false, true),
			[]string{"waypoint demo/waypoint configured", "namespace demo already uses it"}},
		{"apply, nothing bound", ApplyLines("demo", "edge", ForWorkload, true, false, false),
			[]string{"for workload traffic", "nothing uses it yet", "--enroll-namespace"}},
		{"delete with leftovers", DeleteLines("demo", "waypoint", true, true, []Object{{Kind: KindService, Namespace: "demo", Name: "web"}}),
			[]string{"namespace demo: removed label ambit.dev/use-waypoint=waypoint", "waypoint demo/waypoint deleted",
				"warning: 1 object(s) still name it with ambit.dev/use-waypoint=waypoint: service demo/web", "goes directly"}},
		{"delete missing", DeleteLines("demo", "waypoint", false, false, nil), []string{"waypoint demo/waypoint not found: nothing to delete"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(tc.got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lines lack %q:\n%s", w, got)
				}
			}
			if strings.Contains(tc.name, "missing") && strings.Contains(got, "warning") {
				t.Errorf("unexpected warning:\n%s", got)
			}
		})
	}
}

func TestUninstallBlocker(t *testing.T) {
	auto := FromObject(gw("shop", "ambit-auto-waypoint", Class, map[string]string{LabelAutoProvisioned: "true"}, nil))
	if !auto.AutoProvisioned {
		t.Fatalf("FromObject does not see %s=true", LabelAutoProvisioned)
	}
	mine := FromObject(gw("demo", "waypoint", Class, nil, nil))
	other := FromObject(gw("demo", "edge", "istio", nil, nil))
	tests := []struct {
		name       string
		gws        []Info
		removeUser bool
		want       string // substring of the error; "" for none
	}{
		{"none", nil, false, ""},
		{"only auto-provisioned ones: uninstall removes them", []Info{auto}, false, ""},
		{"another class is not ours", []Info{other}, false, ""},
		{"a user's waypoint blocks", []Info{auto, mine, other}, false, "1 waypoint(s) you created are still deployed (demo/waypoint): delete them with ambitctl waypoint delete"},
		{"--unenroll removes it", []Info{auto, mine}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := UninstallBlocker(tc.gws, tc.removeUser)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--unenroll") {
				t.Fatalf("err %v, want %q and the --unenroll way out", err, tc.want)
			}
		})
	}
}
