package model

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

// WorkloadAddress returns w as the Address resource named w.UID.
func WorkloadAddress(w Workload) *workloadv1alpha1.Address {
	pw := &workloadv1alpha1.Workload{
		Uid:               w.UID,
		Name:              w.Name,
		Namespace:         w.Namespace,
		Addresses:         ipBytes(w.Addresses),
		Node:              w.Node,
		ServiceAccount:    w.ServiceAccount,
		TrustDomain:       w.TrustDomain,
		TunnelProtocol:    tunnelProtocol(w.Protocol),
		Status:            workloadv1alpha1.WorkloadStatus_UNHEALTHY,
		CanonicalName:     w.CanonicalName,
		CanonicalRevision: w.CanonicalRevision,
		WorkloadName:      w.WorkloadName,
		WorkloadType:      workloadType(w.WorkloadType),
	}
	if len(w.AuthorizationPolicies) > 0 {
		pw.AuthorizationPolicies = slices.Clone(w.AuthorizationPolicies)
	}
	pw.Waypoint = gatewayAddress(w.Waypoint)
	if w.Healthy {
		pw.Status = workloadv1alpha1.WorkloadStatus_HEALTHY
	}
	if len(w.Services) > 0 {
		pw.Services = make(map[string]*workloadv1alpha1.PortList, len(w.Services))
		for _, name := range slices.Sorted(maps.Keys(w.Services)) {
			pl := &workloadv1alpha1.PortList{}
			for _, m := range w.Services[name] {
				pl.Ports = append(pl.Ports, &workloadv1alpha1.Port{ServicePort: m.ServicePort, TargetPort: m.TargetPort})
			}
			pw.Services[name] = pl
		}
	}
	return &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Workload{Workload: pw}}
}

// ServiceAddress returns s as the Address resource named s.ResourceName().
// Only TCP ports are listed; a named targetPort is sent as target_port 0
// ("resolve per pod from the Workload's services map"), an unset one as the
// Service port.
func ServiceAddress(s Service) *workloadv1alpha1.Address {
	ps := &workloadv1alpha1.Service{
		Name:      s.Name,
		Namespace: s.Namespace,
		Hostname:  s.Hostname,
		Waypoint:  gatewayAddress(s.Waypoint),
	}
	for _, vip := range s.VIPs {
		ps.Addresses = append(ps.Addresses, &workloadv1alpha1.NetworkAddress{Address: vip.Unmap().AsSlice()})
	}
	for _, p := range s.Ports {
		if cmp.Or(p.Protocol, ProtocolTCP) != ProtocolTCP {
			continue
		}
		tp := cmp.Or(p.TargetPort, p.Port)
		if p.TargetPortName != "" {
			tp = 0
		}
		ps.Ports = append(ps.Ports, &workloadv1alpha1.Port{ServicePort: p.Port, TargetPort: tp})
	}
	return &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Service{Service: ps}}
}

// gatewayAddress returns wp as a GatewayAddress naming the waypoint's
// Service by hostname (ztunnel resolves it through that Service's Address
// resource), or nil.
func gatewayAddress(wp *WaypointAddress) *workloadv1alpha1.GatewayAddress {
	if wp == nil {
		return nil
	}
	return &workloadv1alpha1.GatewayAddress{
		Destination: &workloadv1alpha1.GatewayAddress_Hostname{Hostname: &workloadv1alpha1.NamespacedHostname{
			Namespace: wp.Gateway.Namespace, Hostname: wp.Hostname,
		}},
		HboneMtlsPort: wp.Port,
	}
}

func ipBytes(addrs []netip.Addr) [][]byte {
	if len(addrs) == 0 {
		return nil
	}
	out := make([][]byte, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap().AsSlice())
	}
	return out
}

func tunnelProtocol(p TunnelProtocol) workloadv1alpha1.TunnelProtocol {
	if p == TunnelHBONE {
		return workloadv1alpha1.TunnelProtocol_HBONE
	}
	return workloadv1alpha1.TunnelProtocol_NONE
}

func workloadType(t WorkloadType) workloadv1alpha1.WorkloadType {
	switch t {
	case TypeDeployment:
		return workloadv1alpha1.WorkloadType_DEPLOYMENT
	case TypeJob:
		return workloadv1alpha1.WorkloadType_JOB
	case TypeCronJob:
		return workloadv1alpha1.WorkloadType_CRONJOB
	default:
		return workloadv1alpha1.WorkloadType_POD
	}
}
