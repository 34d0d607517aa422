package kube

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"ambit.dev/controlplane/internal/model"
)

// This file copies Kubernetes objects into the plain types of
// internal/model. It decides nothing.

func toNamespace(ns *corev1.Namespace) model.Namespace {
	if ns == nil {
		return model.Namespace{}
	}
	return model.Namespace{Name: ns.Name, Labels: ns.Labels}
}

func parseIPs(ips ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func toContainers(cs []corev1.Container) []model.Container {
	out := make([]model.Container, 0, len(cs))
	for _, c := range cs {
		mc := model.Container{Name: c.Name}
		for _, p := range c.Ports {
			mc.Ports = append(mc.Ports, model.ContainerPort{Name: p.Name, Port: uint32(p.ContainerPort), Protocol: model.Protocol(p.Protocol)})
		}
		out = append(out, mc)
	}
	return out
}

func toPod(p *corev1.Pod) model.Pod {
	mp := model.Pod{
		UID:            string(p.UID),
		Name:           p.Name,
		Namespace:      p.Namespace,
		Labels:         p.Labels,
		Annotations:    p.Annotations,
		ServiceAccount: p.Spec.ServiceAccountName,
		NodeName:       p.Spec.NodeName,
		HostNetwork:    p.Spec.HostNetwork,
		Phase:          model.PodPhase(p.Status.Phase),
		Terminating:    p.DeletionTimestamp != nil,
		Containers:     toContainers(p.Spec.Containers),
		InitContainers: toContainers(p.Spec.InitContainers),
	}
	if len(p.Status.PodIPs) > 0 {
		for _, ip := range p.Status.PodIPs {
			mp.IPs = append(mp.IPs, parseIPs(ip.IP)...)
		}
	} else if p.Status.PodIP != "" {
		mp.IPs = parseIPs(p.Status.PodIP)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			mp.Ready = c.Status == corev1.ConditionTrue
		}
	}
	if o := metav1.GetControllerOf(p); o != nil {
		mp.Owner = &model.Owner{Kind: o.Kind, Name: o.Name}
	}
	return mp
}

func toService(s *corev1.Service, clusterDomain string) model.Service {
	ms := model.Service{
		Name:         s.Name,
		Namespace:    s.Namespace,
		Labels:       s.Labels,
		Hostname:     model.Hostname(s.Name, s.Namespace, clusterDomain),
		ExternalName: s.Spec.Type == corev1.ServiceTypeExternalName,
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	ms.VIPs = parseIPs(ips...) // "None" (headless) does not parse
	for _, p := range s.Spec.Ports {
		sp := model.ServicePort{Name: p.Name, Protocol: model.Protocol(p.Protocol), Port: uint32(p.Port)}
		switch p.TargetPort.Type {
		case intstr.Int:
			sp.TargetPort = uint32(p.TargetPort.IntVal)
		case intstr.String:
			sp.TargetPortName = p.TargetPort.StrVal
		}
		ms.Ports = append(ms.Ports, sp)
	}
	return ms
}

func toEndpointSlice(s *discoveryv1.EndpointSlice) model.EndpointSlice {
	ms := model.EndpointSlice{Name: s.Name, Namespace: s.Namespace, ServiceName: s.Labels[discoveryv1.LabelServiceName]}
	for _, p := range s.Ports {
		ep := model.EndpointPort{}
		if p.Name != nil {
			ep.Name = *p.Name
		}
		if p.Port != nil {
			ep.Port = uint32(*p.Port)
		}
		if p.Protocol != nil {
			ep.Protocol = model.Protocol(*p.Protocol)
		}
		ms.Ports = append(ms.Ports, ep)
	}
	for _, e := range s.Endpoints {
		me := model.Endpoint{Addresses: parseIPs(e.Addresses...), Ready: e.Conditions.Ready}
		if r := e.TargetRef; r != nil {
			me.TargetKind = r.Kind
			me.TargetRef = &model.ObjectRef{Namespace: r.Namespace, Name: r.Name}
		}
		ms.Endpoints = append(ms.Endpoints, me)
	}
	return ms
}
