package kube

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"

	networkingv1alpha1 "ambit.dev/api/networking/v1alpha1"
	"ambit.dev/controlplane/internal/httproute"
	"ambit.dev/controlplane/internal/waypointxds"
)

// HTTPFaultsResource is the resource of HTTPFaults, which HTTPRoute rules
// apply with an ExtensionRef filter (XDS.md §15).
var HTTPFaultsResource = networkingv1alpha1.SchemeGroupVersion.WithResource("httpfaults")

// This file resolves HTTPFault ExtensionRefs: faults is the informer
// (nil when the CRD is not served: every HTTPFault reference is then
// missing and its rules answer 500), routesByFault the routes naming each
// HTTPFault, so that an HTTPFault that appears, changes or goes away
// re-compiles them (and rewrites their status).

// httpFaultsServed reports whether the API server serves HTTPFaults.
func httpFaultsServed(d discovery.DiscoveryInterface) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(networkingv1alpha1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kube: discovering %s (can the control plane reach the API server?): %w", networkingv1alpha1.SchemeGroupVersion, err)
	}
	return slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == HTTPFaultsResource.Resource }), nil
}

// faultLookup is the HTTPFault lookup of httproute.Compile. Caller holds
// c.mu.
func (c *Controller) faultLookup(r httproute.FaultRef) (waypointxds.Fault, bool) {
	if c.faults == nil {
		return waypointxds.Fault{}, false
	}
	obj, exists, err := c.faults.GetIndexer().GetByKey(r.String())
	if err != nil || !exists {
		return waypointxds.Fault{}, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return waypointxds.Fault{}, false
	}
	var f networkingv1alpha1.HTTPFault
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &f); err != nil {
		c.log.Warn("ignoring an HTTPFault that does not match its schema (is the CRD in deploy/ installed at the version the control plane expects?)", "httpfault", r.String(), "error", err)
		return waypointxds.Fault{}, false
	}
	return FaultOf(f.Spec), true
}

// FaultOf converts an HTTPFault spec; unset percentages are 100. Values
// out of range are kept for waypointxds.CheckFault to report.
func FaultOf(s networkingv1alpha1.HTTPFaultSpec) waypointxds.Fault {
	pct := func(p *int32) uint32 {
		switch {
		case p == nil:
			return 100
		case *p < 0:
			return 101 // refused by CheckFault, like any value above 100
		}
		return uint32(*p)
	}
	var f waypointxds.Fault
	if d := s.Delay; d != nil {
		f.Delay = &waypointxds.FaultDelay{Fixed: d.FixedDelay.Duration, Percent: pct(d.Percentage)}
	}
	if a := s.Abort; a != nil {
		f.Abort = &waypointxds.FaultAbort{Percent: pct(a.Percentage)}
		switch {
		case a.GRPCStatus != nil:
			f.Abort.GRPC, f.Abort.GRPCStatus = true, int(*a.GRPCStatus)
		case a.HTTPStatus != nil:
			f.Abort.HTTPStatus = int(*a.HTTPStatus)
		}
	}
	return f
}

// indexRouteFaults adds (or removes) route r under every HTTPFault it
// names. Caller holds c.mu.
func (c *Controller) indexRouteFaults(r httproute.Compiled, add bool) {
	for _, p := range r.Parents {
		for _, f := range p.Faults {
			indexSet(c.routesByFault, f, r.Ref, add)
		}
	}
}

// reconcileHTTPFault re-compiles the routes naming HTTPFault ref. Caller
// holds c.mu.
func (c *Controller) reconcileHTTPFault(ref httproute.FaultRef, b *batch) error {
	for _, r := range slices.SortedFunc(maps.Keys(c.routesByFault[ref]), func(a, b httproute.Ref) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	}) {
		if err := c.reconcileRoute(r, b); err != nil {
			return err
		}
	}
	return nil
}
