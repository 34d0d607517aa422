package kube

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/waypointxds"
	"ambit.dev/pkg/identity"
)

// WaypointSink receives the Envoy configuration input of each waypoint
// (internal/waypointxds.Server is one): Update with the complete input of
// the waypoint "<namespace>/<name>" whenever it changed, Remove when the
// Gateway is gone (or no longer of class ambit-waypoint).
type WaypointSink interface {
	Update(waypoint string, in waypointxds.Input) error
	Remove(waypoint string)
}

// This file feeds the WaypointSink: for every waypoint Gateway (class
// ambit-waypoint, Programmed or not: its pods need their configuration to
// become ready, which is what makes the Gateway Programmed), the Services
// whose traffic is bound to it (none until it is Programmed) (model.ServiceWaypoint), with
// their ports and endpoints (the Service's members, their named target
// ports resolved per pod from the EndpointSlices as for ztunnel). A
// reconcile marks the waypoints it may have affected (the old and new
// waypoint of a Service it re-derived, the waypoints of the Services of a
// pod it re-derived, a Gateway it re-read, the Gateway of a waypoint pod);
// syncWaypoints recomputes their input and sends it when it differs from
// what was sent last.

// markWaypoint marks the waypoint ref for recomputation. Caller holds c.mu.
func (b *batch) markWaypoint(ref model.ObjectRef) {
	if ref.Name == "" {
		return
	}
	if b.waypoints == nil {
		b.waypoints = map[model.ObjectRef]bool{}
	}
	b.waypoints[ref] = true
}

// bindService records that the Service ref (resource name name) is bound
// to waypoint wp (zero: none), and marks the old and new waypoint. Caller
// holds c.mu.
func (c *Controller) bindService(ref model.ObjectRef, name string, wp model.ObjectRef, b *batch) {
	old := c.svcWaypoint[ref]
	b.markWaypoint(old)
	b.markWaypoint(wp)
	if old == wp {
		return
	}
	if old.Name != "" {
		delete(c.wpServices[old], ref)
		if len(c.wpServices[old]) == 0 {
			delete(c.wpServices, old)
		}
		delete(c.svcWaypoint, ref)
		delete(c.svcWaypointByName, name)
	}
	if wp.Name != "" {
		if c.wpServices[wp] == nil {
			c.wpServices[wp] = map[model.ObjectRef]bool{}
		}
		c.wpServices[wp][ref] = true
		c.svcWaypoint[ref] = wp
		c.svcWaypointByName[name] = wp
	}
}

// markPodWaypoints marks the waypoints whose input may include pod ref: the
// waypoints of the Services it backs, and the Gateway it is a proxy of.
// Caller holds c.mu.
func (c *Controller) markPodWaypoints(ref model.ObjectRef, pod *corev1.Pod, b *batch) {
	for name := range c.podServices[ref] {
		b.markWaypoint(c.svcWaypointByName[name])
		c.markBackendWaypoints(name, b)
	}
	if pod != nil && pod.Labels[model.LabelGatewayName] != "" {
		b.markWaypoint(model.ObjectRef{Namespace: pod.Namespace, Name: pod.Labels[model.LabelGatewayName]})
	}
}

// syncWaypoints recomputes the input of the waypoints marked in b and
// sends what changed. Caller holds c.mu.
func (c *Controller) syncWaypoints(b *batch) error {
	if c.waypointSink == nil {
		return nil
	}
	var errs []error
	for _, ref := range slices.SortedFunc(maps.Keys(b.waypoints), compareRefs) {
		key := ref.String()
		gw, ok := c.waypoints[ref]
		if !ok || gw.Class != model.WaypointClass {
			if _, sent := c.wpSent[ref]; sent {
				c.waypointSink.Remove(key)
				delete(c.wpSent, ref)
				c.log.Info("waypoint configuration removed", "waypoint", key)
			}
			continue
		}
		in := c.waypointInput(ref)
		if old, sent := c.wpSent[ref]; sent && reflect.DeepEqual(old, in) {
			continue
		}
		if err := c.waypointSink.Update(key, in); err != nil {
			errs = append(errs, fmt.Errorf("kube: waypoint %s: %w", key, err))
			continue
		}
		c.wpSent[ref] = in
		c.log.Debug("waypoint configuration updated", "waypoint", key, "services", len(in.Services))
	}
	return errors.Join(errs...)
}

// markAllWaypoints marks every known waypoint and every waypoint sent
// before. Caller holds c.mu.
func (c *Controller) markAllWaypoints(b *batch) {
	for ref := range c.waypoints {
		b.markWaypoint(ref)
	}
	for ref := range c.wpSent {
		b.markWaypoint(ref)
	}
}

// waypointInput computes the input of waypoint ref from the caches and the
// model state. Caller holds c.mu.
func (c *Controller) waypointInput(ref model.ObjectRef) waypointxds.Input {
	in := waypointxds.Input{Waypoint: waypointxds.Waypoint{
		Namespace: ref.Namespace, Name: ref.Name,
		ClusterDomain: c.domain, TrustDomain: c.cfg.TrustDomain,
	}}
	if objs, err := c.pods.GetIndexer().ByIndex(byWaypoint, ref.String()); err == nil {
		for _, o := range objs {
			if p, ok := o.(*corev1.Pod); ok && p.Namespace == ref.Namespace && p.Labels[model.LabelGatewayName] == ref.Name {
				in.Waypoint.Addresses = append(in.Waypoint.Addresses, toPod(p).IPs...)
			}
		}
		slices.SortFunc(in.Waypoint.Addresses, netip.Addr.Compare)
		in.Waypoint.Addresses = slices.Compact(in.Waypoint.Addresses)
	}
	for _, svcRef := range slices.SortedFunc(maps.Keys(c.wpServices[ref]), compareRefs) {
		svc, err := c.svcLister.Services(svcRef.Namespace).Get(svcRef.Name)
		if err != nil {
			continue // gone: its reconcile unbinds it
		}
		ws := c.waypointService(svc, c.svcMembers[svcRef])
		ws.Policies = c.waypointPolicies(ref, svcRef)
		in.Services = append(in.Services, ws)
	}
	if c.gateways != nil {
		if obj, ok, _ := c.gateways.GetIndexer().GetByKey(ref.String()); ok {
			if m, err := metaOf(obj); err == nil {
				// Unset or invalid: the default (nil); the waypoint
				// controller reports an invalid value on the Gateway.
				if pct, problem := model.AccessLogSampling(m.GetAnnotations()); problem == "" && pct != model.DefaultAccessLogSampling {
					in.Waypoint.AccessLogPercent = &pct
				}
			}
		}
	}
	c.addRoutes(ref, &in)
	return in
}

// waypointService converts a Service bound to a waypoint and its members
// (pods and their port mappings). Caller holds c.mu.
func (c *Controller) waypointService(svc *corev1.Service, members map[model.ObjectRef][]model.PortMapping) waypointxds.Service {
	ms := toService(svc, c.domain)
	out := waypointxds.Service{Namespace: svc.Namespace, Name: svc.Name, Hostname: ms.Hostname, VIPs: ms.VIPs}
	out.Ports = WaypointPorts(svc)
	c.addBackendSettings(&out)
	for _, podRef := range slices.SortedFunc(maps.Keys(members), compareRefs) {
		p, err := c.podLister.Pods(podRef.Namespace).Get(podRef.Name)
		if err != nil {
			continue
		}
		ns, _ := c.nsLister.Get(p.Namespace)
		if ep, ok := WaypointEndpoint(p, ns, members[podRef], c.cfg.TrustDomain); ok {
			out.Endpoints = append(out.Endpoints, ep)
		}
	}
	return out
}

// WaypointPorts returns the TCP ports of svc as the waypoint configuration
// takes them: a numeric targetPort is the port's TargetPort (an unset one
// is the service port); a named one is resolved per endpoint.
func WaypointPorts(svc *corev1.Service) []waypointxds.Port {
	var out []waypointxds.Port
	for _, p := range svc.Spec.Ports {
		if cmp.Or(p.Protocol, corev1.ProtocolTCP) != corev1.ProtocolTCP || p.Port <= 0 || p.Port > 65535 {
			continue
		}
		wp := waypointxds.Port{Name: p.Name, Port: uint16(p.Port)}
		if p.AppProtocol != nil {
			wp.AppProtocol = *p.AppProtocol
		}
		switch {
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal > 0 && p.TargetPort.IntVal <= 65535:
			wp.TargetPort = uint16(p.TargetPort.IntVal)
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0:
			wp.TargetPort = uint16(p.Port)
		}
		out = append(out, wp)
	}
	return out
}

// WaypointEndpoint converts a pod backing a Service, with its port
// mappings, into a waypoint endpoint: its IPs, node, SPIFFE identity
// (spiffe://<td>/ns/<namespace>/sa/<service account>), readiness and
// target port per service port; a pod outside the mesh (not enrolled in
// namespace ns, which may be nil: e.g. a pod with an Istio sidecar) is a
// Plaintext endpoint. ok is false for a pod without an IP or a valid
// identity.
func WaypointEndpoint(p *corev1.Pod, ns *corev1.Namespace, ports []model.PortMapping, trustDomain string) (waypointxds.Endpoint, bool) {
	mp := toPod(p)
	if len(mp.IPs) == 0 {
		return waypointxds.Endpoint{}, false
	}
	id, err := identity.New(trustDomain, p.Namespace, cmp.Or(p.Spec.ServiceAccountName, "default"))
	if err != nil {
		return waypointxds.Endpoint{}, false
	}
	ep := waypointxds.Endpoint{
		Name: p.Name, Namespace: p.Namespace,
		Addresses: slices.Clone(mp.IPs),
		Node:      p.Spec.NodeName,
		Identity:  id.String(),
		Healthy:   mp.Ready && !mp.Terminating,
	}
	if enrolled, _ := model.Enrolled(toNamespace(ns), mp); !enrolled {
		ep.Plaintext, ep.Identity = true, ""
	}
	for _, m := range ports {
		if m.ServicePort == 0 || m.ServicePort > 65535 || m.TargetPort == 0 || m.TargetPort > 65535 {
			continue
		}
		if ep.TargetPorts == nil {
			ep.TargetPorts = map[uint16]uint16{}
		}
		ep.TargetPorts[uint16(m.ServicePort)] = uint16(m.TargetPort)
	}
	return ep, true
}

func compareRefs(a, b model.ObjectRef) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}
