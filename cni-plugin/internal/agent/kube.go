package agent

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"ambit.dev/pkg/enrol"
)

// toEnrolPod copies the fields enrol.Decide reads.
func toEnrolPod(p *corev1.Pod) enrol.Pod {
	ep := enrol.Pod{
		Namespace:   p.Namespace,
		Labels:      p.Labels,
		Annotations: p.Annotations,
		HostNetwork: p.Spec.HostNetwork,
	}
	for _, c := range p.Spec.Containers {
		ep.Containers = append(ep.Containers, c.Name)
	}
	for _, c := range p.Spec.InitContainers {
		ep.InitContainers = append(ep.InitContainers, c.Name)
	}
	return ep
}

// toEnrolNamespace copies the namespace's labels (nil: unknown namespace).
func toEnrolNamespace(ns *corev1.Namespace) enrol.Namespace {
	if ns == nil {
		return enrol.Namespace{}
	}
	return enrol.Namespace{Labels: ns.Labels}
}

// toPod is the capture's view of p.
func toPod(p *corev1.Pod) Pod {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return Pod{
		UID: string(p.UID), Namespace: p.Namespace, Name: p.Name,
		ServiceAccount: sa, IPs: podIPs(p),
	}
}

// podIPs returns status.podIPs (or status.podIP), parsed.
func podIPs(p *corev1.Pod) []netip.Addr {
	var raw []string
	for _, ip := range p.Status.PodIPs {
		raw = append(raw, ip.IP)
	}
	if len(raw) == 0 && p.Status.PodIP != "" {
		raw = []string{p.Status.PodIP}
	}
	return parseIPs(raw)
}

// parseIPs parses addresses, with or without a /prefix, skipping bad ones
// and duplicates.
func parseIPs(raw []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range raw {
		s = strings.TrimSpace(s)
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[:i]
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		dup := false
		for _, o := range out {
			dup = dup || o == ip
		}
		if !dup {
			out = append(out, ip)
		}
	}
	return out
}
