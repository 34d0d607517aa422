// Package waypoint is what `ambitctl waypoint` decides and prints: the
// Gateway API Gateway that declares a waypoint, its state read from the
// Gateway's status, which namespaces, Services and pods are bound to it by
// label, and the text of apply, list, status and delete. Everything here is
// a pure function; internal/kube reads and writes the objects.
//
// The names below are those of the control plane's waypoint model
// (ambit.dev/controlplane/internal/model/waypoint.go), which is another
// module's internal package and cannot be imported.
package waypoint

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The waypoint API.
const (
	// DefaultName is the Gateway name when --name is not given.
	DefaultName = "waypoint"
	// Class is the GatewayClass of waypoints.
	Class = "ambit-waypoint"
	// ListenerName, ListenerPort and ListenerProtocol are the one listener
	// a waypoint Gateway must have.
	ListenerName     = "mesh"
	ListenerPort     = 15008
	ListenerProtocol = "HBONE"

	// LabelUseWaypoint on a Namespace, Service or pod names the waypoint
	// its traffic goes through; UseWaypointNone opts out.
	LabelUseWaypoint = "ambit.dev/use-waypoint"
	// LabelUseWaypointNamespace is the namespace of that waypoint (default:
	// the labelled object's namespace).
	LabelUseWaypointNamespace = "ambit.dev/use-waypoint-namespace"
	// UseWaypointNone is the LabelUseWaypoint value that opts out.
	UseWaypointNone = "none"
	// LabelWaypointFor on the Gateway says which traffic it takes.
	LabelWaypointFor = "ambit.dev/waypoint-for"
	// LabelGatewayName is on the pods and Service the waypoint controller
	// deploys for a Gateway.
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"

	// ConditionProgrammed is the Gateway condition that says the waypoint
	// is deployed and has an available replica.
	ConditionProgrammed = "Programmed"

	// LabelAutoProvisioned=true marks the Gateways the control plane's
	// auto-provisioning created (controlplane/internal/autowaypoint);
	// AnnotationAutoWaypoint marks the Services it bound to one.
	LabelAutoProvisioned   = "ambit.dev/auto-provisioned"
	AnnotationAutoWaypoint = "ambit.dev/auto-waypoint"
)

// Values of LabelWaypointFor.
const (
	ForService  = "service"
	ForWorkload = "workload"
	ForAll      = "all"
)

// Gateway API identifiers.
var (
	GatewayGVK = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "Gateway"}
	GatewayGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
)

// ParseFor checks a --for value.
func ParseFor(v string) (string, error) {
	switch v {
	case ForService, ForWorkload, ForAll:
		return v, nil
	}
	return "", fmt.Errorf("--for %q: want %s (traffic to the namespace's Services), %s (traffic to pod IPs) or %s", v, ForService, ForWorkload, ForAll)
}

// Gateway returns the Gateway that `ambitctl waypoint apply` server-side
// applies: class Class, one HBONE listener, label LabelWaypointFor=forTraffic.
func Gateway(namespace, name, forTraffic string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"gatewayClassName": Class,
			"listeners": []any{map[string]any{
				"name": ListenerName, "port": int64(ListenerPort), "protocol": ListenerProtocol,
			}},
		},
	}}
	u.SetGroupVersionKind(GatewayGVK)
	u.SetNamespace(namespace)
	u.SetName(name)
	u.SetLabels(map[string]string{LabelWaypointFor: forTraffic})
	return u
}

// Condition is one status condition of a Gateway.
type Condition struct {
	Type, Status, Reason, Message string
}

// Info is a Gateway as ambitctl shows it.
type Info struct {
	Namespace, Name string
	// Class is spec.gatewayClassName.
	Class string
	// For is the LabelWaypointFor value (ForService when absent).
	For        string
	Conditions []Condition
	// Addresses are status.addresses values.
	Addresses []string
	// AutoProvisioned is true for a Gateway the control plane created.
	AutoProvisioned bool
}

// Ref is namespace/name.
func (i Info) Ref() string { return i.Namespace + "/" + i.Name }

// FromObject reads a Gateway.
func FromObject(u *unstructured.Unstructured) Info {
	i := Info{Namespace: u.GetNamespace(), Name: u.GetName(), For: u.GetLabels()[LabelWaypointFor],
		AutoProvisioned: u.GetLabels()[LabelAutoProvisioned] == "true"}
	if i.For == "" {
		i.For = ForService
	}
	i.Class, _, _ = unstructured.NestedString(u.Object, "spec", "gatewayClassName")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		s := func(k string) string { v, _ := m[k].(string); return v }
		i.Conditions = append(i.Conditions, Condition{Type: s("type"), Status: s("status"), Reason: s("reason"), Message: s("message")})
	}
	addrs, _, _ := unstructured.NestedSlice(u.Object, "status", "addresses")
	for _, a := range addrs {
		if m, ok := a.(map[string]any); ok {
			if v, _ := m["value"].(string); v != "" {
				i.Addresses = append(i.Addresses, v)
			}
		}
	}
	return i
}

// Condition returns the condition of type t and whether there is one.
func (i Info) Condition(t string) (Condition, bool) {
	for _, c := range i.Conditions {
		if c.Type == t {
			return c, true
		}
	}
	return Condition{}, false
}

// Programmed reports whether the Programmed condition is True.
func (i Info) Programmed() bool {
	c, ok := i.Condition(ConditionProgrammed)
	return ok && c.Status == "True"
}

// ProgrammedState is the PROGRAMMED column: the condition's status, or
// "-" when there is none.
func (i Info) ProgrammedState() string {
	c, ok := i.Condition(ConditionProgrammed)
	if !ok || c.Status == "" {
		return "-"
	}
	return c.Status
}

// Progress is the line `apply --wait` prints whenever it changes.
func Progress(i Info) string {
	if i.Programmed() {
		addr := ""
		if len(i.Addresses) > 0 {
			addr = " (address " + strings.Join(i.Addresses, ", ") + ")"
		}
		return fmt.Sprintf("waypoint %s is Programmed%s", i.Ref(), addr)
	}
	c, ok := i.Condition(ConditionProgrammed)
	if !ok {
		return fmt.Sprintf("waiting for waypoint %s: no Programmed condition yet (the waypoint controller has not reported on it)", i.Ref())
	}
	return fmt.Sprintf("waiting for waypoint %s: Programmed=%s %s: %s", i.Ref(), c.Status, c.Reason, c.Message)
}

// TimeoutLines explains why a waypoint did not become Programmed and how
// to find out more.
func TimeoutLines(i Info) []string {
	out := []string{fmt.Sprintf("waypoint %s is not Programmed yet.", i.Ref())}
	if len(i.Conditions) == 0 {
		out = append(out, "The Gateway has no status conditions: no waypoint controller has seen it. Is Ambit installed and its control plane running? (ambitctl check)")
	} else {
		out = append(out, "Conditions:")
		out = append(out, conditionLines(i.Conditions)...)
	}
	return append(out,
		"To see why:",
		fmt.Sprintf("  kubectl -n %s describe gateway %s", i.Namespace, i.Name),
		fmt.Sprintf("  kubectl -n %s describe deployment %s", i.Namespace, i.Name),
		fmt.Sprintf("  kubectl -n %s logs deployment/%s", i.Namespace, i.Name),
		fmt.Sprintf("Then check again with: ambitctl waypoint status -n %s --name %s", i.Namespace, i.Name))
}

func conditionLines(cs []Condition) []string {
	var out []string
	for _, c := range cs {
		l := fmt.Sprintf("  %s=%s", c.Type, c.Status)
		if c.Reason != "" {
			l += " " + c.Reason
		}
		if c.Message != "" {
			l += ": " + c.Message
		}
		out = append(out, l)
	}
	return out
}

// ApplyLines describes the outcome of apply before any wait.
func ApplyLines(namespace, name, forTraffic string, created, enrolled, alreadyEnrolled bool) []string {
	verb := "configured"
	if created {
		verb = "created"
	}
	out := []string{fmt.Sprintf("waypoint %s/%s %s (Gateway of class %s, for %s traffic)", namespace, name, verb, Class, forTraffic)}
	switch {
	case alreadyEnrolled:
		out = append(out, fmt.Sprintf("namespace %s already uses it (%s=%s)", namespace, LabelUseWaypoint, name))
	case enrolled:
		out = append(out, fmt.Sprintf("namespace %s labelled %s=%s: its %s now go through it", namespace, LabelUseWaypoint, name, forWhat(forTraffic)))
	default:
		out = append(out, fmt.Sprintf("nothing uses it yet: label a Service, pod or the namespace %s=%s (or re-run with --enroll-namespace)", LabelUseWaypoint, name))
	}
	return out
}

func forWhat(f string) string {
	switch f {
	case ForWorkload:
		return "pods"
	case ForAll:
		return "Services and pods"
	}
	return "Services"
}

// UninstallBlocker says why uninstall must not go on while waypoints are
// deployed, or nil. Waypoints the control plane provisioned are Ambit's
// own: uninstall removes them. Those a user created are not removed
// without removeUser (--unenroll): their pods would keep running without
// a control plane, and deleting them unasked would lose the user's
// objects.
func UninstallBlocker(gws []Info, removeUser bool) error {
	if removeUser {
		return nil
	}
	var mine []string
	for _, g := range gws {
		if g.Class == Class && !g.AutoProvisioned {
			mine = append(mine, g.Ref())
		}
	}
	if len(mine) == 0 {
		return nil
	}
	return fmt.Errorf("%d waypoint(s) you created are still deployed (%s): delete them with ambitctl waypoint delete -n <namespace> --name <name>, or pass --unenroll, which deletes them too",
		len(mine), strings.Join(mine, ", "))
}
