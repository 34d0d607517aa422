package model

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Waypoint API: a Gateway API Gateway of class WaypointClass is a waypoint
// (an L7 proxy). Objects choose one with labels; the waypoint controller
// (internal/waypoint) deploys it.
const (
	// WaypointClass is the GatewayClass of waypoints.
	WaypointClass = "ambit-waypoint"
	// WaypointControllerName is that GatewayClass's spec.controllerName.
	WaypointControllerName = "ambit.dev/waypoint-controller"
	// WaypointListenerName, WaypointListenerPort and WaypointListenerProtocol
	// describe the one listener a waypoint Gateway must have.
	WaypointListenerName     = "mesh"
	WaypointListenerPort     = 15008
	WaypointListenerProtocol = "HBONE"
	// WaypointHBONEPort is where a waypoint terminates HBONE.
	WaypointHBONEPort = 15008

	// LabelUseWaypoint on a Namespace, Service or Pod names the waypoint
	// Gateway its traffic goes through; UseWaypointNone opts the object
	// out of a waypoint chosen at a wider level.
	LabelUseWaypoint = "ambit.dev/use-waypoint"
	// LabelUseWaypointNamespace, next to LabelUseWaypoint, is the
	// namespace of that Gateway (default: the labelled object's namespace).
	LabelUseWaypointNamespace = "ambit.dev/use-waypoint-namespace"
	// UseWaypointNone is the LabelUseWaypoint value that opts out.
	UseWaypointNone = "none"
	// LabelWaypointFor on a waypoint Gateway says which traffic it takes:
	// WaypointForService (the default), WaypointForWorkload or
	// WaypointForAll.
	LabelWaypointFor = "ambit.dev/waypoint-for"
	// LabelGatewayName is the label Gateway API implementations put on the
	// objects they deploy for a Gateway; the waypoint controller puts it on
	// a waypoint's pods and Service.
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"
)

// WaypointFor is the traffic a waypoint takes.
type WaypointFor string

// Values of LabelWaypointFor.
const (
	WaypointForService  WaypointFor = "service"
	WaypointForWorkload WaypointFor = "workload"
	WaypointForAll      WaypointFor = "all"
)

// ParseWaypointFor returns the traffic a Gateway with labels takes: the
// LabelWaypointFor value, WaypointForService when the label is absent, and
// an error for any other value.
func ParseWaypointFor(labels map[string]string) (WaypointFor, error) {
	v, ok := labels[LabelWaypointFor]
	if !ok || v == "" {
		return WaypointForService, nil
	}
	switch f := WaypointFor(v); f {
	case WaypointForService, WaypointForWorkload, WaypointForAll:
		return f, nil
	}
	return "", fmt.Errorf("label %s=%q: want %s, %s or %s", LabelWaypointFor, v, WaypointForService, WaypointForWorkload, WaypointForAll)
}

// takes reports whether a waypoint for f takes traffic of kind t.
func (f WaypointFor) takes(t Traffic) bool {
	return f == WaypointForAll || (f == WaypointForService && t == TrafficService) || (f == WaypointForWorkload && t == TrafficWorkload)
}

// Traffic is how a connection addresses its destination.
type Traffic string

// Kinds of traffic.
const (
	// TrafficService is addressed to a Service VIP.
	TrafficService Traffic = "service"
	// TrafficWorkload is addressed to a pod IP.
	TrafficWorkload Traffic = "workload"
)

// Gateway is a Gateway API Gateway as the waypoint binding rules see it.
type Gateway struct {
	Namespace string
	Name      string
	// Class is spec.gatewayClassName.
	Class string
	// Labels of the Gateway (LabelWaypointFor).
	Labels map[string]string
	// Programmed is true when its Programmed condition is True: the
	// waypoint controller deployed it and it has an available replica.
	Programmed bool
}

// Ref returns the Gateway's namespace/name.
func (g Gateway) Ref() ObjectRef { return ObjectRef{Namespace: g.Namespace, Name: g.Name} }

// Waypoints are the Gateways of class WaypointClass, by namespace/name.
type Waypoints map[ObjectRef]Gateway

// WaypointAddress is where a waypoint receives HBONE: its Service.
type WaypointAddress struct {
	// Gateway is the waypoint's Gateway.
	Gateway ObjectRef
	// Hostname is the fully qualified name of the waypoint's Service,
	// which the waypoint controller names after the Gateway.
	Hostname string
	// Port is the HBONE port (WaypointHBONEPort).
	Port uint32
}

// WaypointBinding is what the binding rules decided for one Service or
// Workload.
type WaypointBinding struct {
	// Waypoint is the waypoint the traffic goes through; nil for none.
	Waypoint *WaypointAddress
	// Requested is the Gateway named by the label that decided; zero when
	// no label applies or the deciding label is UseWaypointNone.
	Requested ObjectRef
	// Unusable is true when that Gateway cannot take the traffic (it does
	// not exist, is not of class WaypointClass, is not Programmed or its
	// LabelWaypointFor excludes the traffic): the traffic then goes
	// without a waypoint, and this should be reported.
	Unusable bool
	// Reason explains the decision.
	Reason string
}

// labelLevel is one object whose labels may choose a waypoint.
type labelLevel struct {
	what      string // e.g. `service demo/web`
	namespace string // the object's namespace
	labels    map[string]string
}

// ServiceWaypoint decides the waypoint of traffic addressed to svc (in
// namespace ns): the Service's LabelUseWaypoint, else the namespace's. The
// Service of a waypoint itself never gets one.
func ServiceWaypoint(ns Namespace, svc Service, wps Waypoints, clusterDomain string) WaypointBinding {
	if IsWaypointProxy(svc.Namespace, svc.Labels, wps) {
		return WaypointBinding{Reason: "the Service of waypoint " + svc.Namespace + "/" + svc.Labels[LabelGatewayName] + " takes no waypoint"}
	}
	return bind(TrafficService, wps, clusterDomain,
		labelLevel{"service " + svc.Namespace + "/" + svc.Name, svc.Namespace, svc.Labels},
		labelLevel{"namespace " + svc.Namespace, svc.Namespace, ns.Labels})
}

// WorkloadWaypoint decides the waypoint of traffic addressed to pod's own
// IP (in namespace ns): the pod's LabelUseWaypoint, else the namespace's.
// (The label of a Service the pod backs binds traffic to that Service, not
// traffic to the pod.) The pods of a waypoint never get one.
func WorkloadWaypoint(ns Namespace, pod Pod, wps Waypoints, clusterDomain string) WaypointBinding {
	if IsWaypointProxy(pod.Namespace, pod.Labels, wps) {
		return WaypointBinding{Reason: "a pod of waypoint " + pod.Namespace + "/" + pod.Labels[LabelGatewayName] + " takes no waypoint"}
	}
	return bind(TrafficWorkload, wps, clusterDomain,
		labelLevel{"pod " + pod.Namespace + "/" + pod.Name, pod.Namespace, pod.Labels},
		labelLevel{"namespace " + pod.Namespace, pod.Namespace, ns.Labels})
}

// IsWaypointProxy reports whether an object in namespace with labels is
// part of a waypoint: its LabelGatewayName names a Gateway of class
// WaypointClass in its own namespace (the waypoint controller labels the
// pods and the Service it deploys so).
func IsWaypointProxy(namespace string, labels map[string]string, wps Waypoints) bool {
	name := labels[LabelGatewayName]
	if name == "" {
		return false
	}
	gw, ok := wps[ObjectRef{Namespace: namespace, Name: name}]
	return ok && gw.Class == WaypointClass
}

// WaypointWorkload returns w as published: a pod of a waypoint is reached
// over HBONE (the waypoint terminates HBONE itself on WaypointHBONEPort,
// although ztunnel does not capture it), and every workload carries the
// waypoint of b.
func WaypointWorkload(w Workload, pod Pod, wps Waypoints, b WaypointBinding) Workload {
	if IsWaypointProxy(pod.Namespace, pod.Labels, wps) {
		w.Protocol = TunnelHBONE
	}
	w.Waypoint = b.Waypoint
	return w
}

// gatewayName matches a Gateway name (a DNS subdomain, which the label
// value must be to name one).
var gatewayName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// bind applies the first level whose LabelUseWaypoint is set.
func bind(t Traffic, wps Waypoints, clusterDomain string, levels ...labelLevel) WaypointBinding {
	for _, l := range levels {
		v := l.labels[LabelUseWaypoint]
		if v == "" {
			continue
		}
		if v == UseWaypointNone {
			return WaypointBinding{Reason: fmt.Sprintf("%s opts out with %s=%s", l.what, LabelUseWaypoint, UseWaypointNone)}
		}
		ref := ObjectRef{Namespace: l.namespace, Name: v}
		if n := l.labels[LabelUseWaypointNamespace]; n != "" {
			ref.Namespace = n
		}
		b := WaypointBinding{Requested: ref}
		unusable := func(why string) WaypointBinding {
			b.Unusable = true
			b.Reason = fmt.Sprintf("%s asks for waypoint %s, which %s: no waypoint is used", l.what, ref, why)
			return b
		}
		if !gatewayName.MatchString(ref.Name) || !gatewayName.MatchString(ref.Namespace) {
			return unusable("is not a valid Gateway name")
		}
		gw, ok := wps[ref]
		switch {
		case !ok:
			return unusable("does not exist")
		case gw.Class != WaypointClass:
			return unusable(fmt.Sprintf("is of class %q, not %s", gw.Class, WaypointClass))
		}
		f, err := ParseWaypointFor(gw.Labels)
		switch {
		case err != nil:
			return unusable("has an invalid " + err.Error())
		case !f.takes(t):
			return unusable(fmt.Sprintf("takes %s traffic only (%s), not %s traffic", f, LabelWaypointFor, t))
		case !gw.Programmed:
			return unusable("is not Programmed yet (no available replica)")
		}
		b.Waypoint = &WaypointAddress{Gateway: ref, Hostname: Hostname(ref.Name, ref.Namespace, clusterDomain), Port: WaypointHBONEPort}
		b.Reason = fmt.Sprintf("%s uses waypoint %s (%s=%s)", l.what, ref, LabelUseWaypoint, v)
		return b
	}
	return WaypointBinding{Reason: "no " + LabelUseWaypoint + " label applies"}
}

// AnnotationAccessLogSampling on a waypoint Gateway is the percentage of
// requests its access log records (XDS.md §13); responses >= 400 are
// always logged.
const AnnotationAccessLogSampling = "ambit.dev/access-log-sampling"

// DefaultAccessLogSampling is the sampling without the annotation.
const DefaultAccessLogSampling = 100

// AccessLogSampling reads AnnotationAccessLogSampling: an integer 0-100,
// optionally followed by "%". Unset: DefaultAccessLogSampling. An invalid
// value returns the default and a problem saying what to write.
func AccessLogSampling(annotations map[string]string) (percent uint32, problem string) {
	v, ok := annotations[AnnotationAccessLogSampling]
	if !ok {
		return DefaultAccessLogSampling, ""
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), "%"), 10, 32)
	if err != nil || n > 100 {
		return DefaultAccessLogSampling, fmt.Sprintf("annotation %s: %q is not a percentage 0-100 (e.g. \"10\"); logging %d%% of requests", AnnotationAccessLogSampling, v, DefaultAccessLogSampling)
	}
	return uint32(n), ""
}
