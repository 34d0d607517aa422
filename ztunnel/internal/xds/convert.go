package xds

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

// workloadRes is a converted Workload resource. The parts that depend on
// other resources (a waypoint named by hostname, the mTLS mode) are
// resolved when the snapshot is built.
type workloadRes struct {
	w            model.Workload
	waypointHost string // "<namespace>/<hostname>" of a waypoint Service
	waypointPort uint16
	policies     []string // Workload.authorization_policies
}

// serviceRes is a converted Service resource.
type serviceRes struct {
	s            model.Service
	waypointHost string
	waypointPort uint16
}

// address is one converted Address resource: exactly one of the two is set.
type address struct {
	workload *workloadRes
	service  *serviceRes
}

// convertAddress checks an Address resource and converts it. name is the
// xDS resource name, which must match the resource's content.
func convertAddress(name string, a *workloadv1alpha1.Address, defaultTD string) (address, error) {
	if got := a.ResourceName(); got != name {
		if got == "" {
			return address{}, errors.New("Address holds neither a workload nor a service")
		}
		return address{}, fmt.Errorf("resource name %q does not match its content (want %q)", name, got)
	}
	switch t := a.GetType().(type) {
	case *workloadv1alpha1.Address_Workload:
		w, err := convertWorkload(t.Workload, defaultTD)
		if err != nil {
			return address{}, fmt.Errorf("workload %s: %w", name, err)
		}
		return address{workload: &w}, nil
	case *workloadv1alpha1.Address_Service:
		s, err := convertService(t.Service)
		if err != nil {
			return address{}, fmt.Errorf("service %s: %w", name, err)
		}
		return address{service: &s}, nil
	}
	return address{}, errors.New("Address holds neither a workload nor a service")
}

func convertWorkload(pw *workloadv1alpha1.Workload, defaultTD string) (workloadRes, error) {
	var errs []error
	w := model.Workload{
		UID:            pw.GetUid(),
		Name:           pw.GetName(),
		Namespace:      pw.GetNamespace(),
		ServiceAccount: pw.GetServiceAccount(),
		TrustDomain:    pw.GetTrustDomain(),
		Node:           pw.GetNode(),
		MTLSMode:       model.MTLSPermissive,
	}
	if w.UID == "" || w.Name == "" || w.Namespace == "" || w.ServiceAccount == "" {
		errs = append(errs, errors.New("uid, name, namespace and service_account are required"))
	}
	if w.TrustDomain == "" {
		w.TrustDomain = defaultTD
	}
	if err := w.Identity().Validate(); err != nil && w.ServiceAccount != "" && w.Namespace != "" {
		errs = append(errs, fmt.Errorf("identity: %w", err))
	}
	switch pw.GetTunnelProtocol() {
	case workloadv1alpha1.TunnelProtocol_HBONE:
		w.Protocol = model.ProtocolHBONE
	case workloadv1alpha1.TunnelProtocol_NONE:
		w.Protocol = model.ProtocolNone
	default:
		errs = append(errs, fmt.Errorf("unknown tunnel_protocol %d", pw.GetTunnelProtocol()))
	}
	switch pw.GetStatus() {
	case workloadv1alpha1.WorkloadStatus_HEALTHY:
		w.Status = model.StatusHealthy
	case workloadv1alpha1.WorkloadStatus_UNHEALTHY:
		w.Status = model.StatusUnhealthy
	default:
		errs = append(errs, fmt.Errorf("unknown status %d", pw.GetStatus()))
	}
	for _, b := range pw.GetAddresses() {
		ip, err := ipFromBytes(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("addresses: %w", err))
			continue
		}
		w.Addresses = append(w.Addresses, ip)
	}
	if len(pw.GetServices()) > 0 {
		w.Services = make(map[string]model.PortMap, len(pw.GetServices()))
		for key, pl := range pw.GetServices() {
			pm, err := portMap(pl.GetPorts(), false)
			if err != nil {
				errs = append(errs, fmt.Errorf("services[%q]: %w", key, err))
				continue
			}
			w.Services[key] = pm
		}
	}
	res := workloadRes{w: w, policies: pw.GetAuthorizationPolicies()}
	if gw := pw.GetWaypoint(); gw != nil {
		wp, host, port, err := convertGateway(gw)
		if err != nil {
			errs = append(errs, fmt.Errorf("waypoint: %w", err))
		}
		res.w.Waypoint, res.waypointHost, res.waypointPort = wp, host, port
	}
	return res, errors.Join(errs...)
}

func convertService(ps *workloadv1alpha1.Service) (serviceRes, error) {
	var errs []error
	s := model.Service{Name: ps.GetName(), Namespace: ps.GetNamespace(), Hostname: ps.GetHostname()}
	if s.Name == "" || s.Namespace == "" || s.Hostname == "" {
		errs = append(errs, errors.New("name, namespace and hostname are required"))
	}
	for _, na := range ps.GetAddresses() {
		ip, err := ipFromBytes(na.GetAddress())
		if err != nil {
			errs = append(errs, fmt.Errorf("addresses: %w", err))
			continue
		}
		s.VIPs = append(s.VIPs, ip)
	}
	pm, err := portMap(ps.GetPorts(), true)
	if err != nil {
		errs = append(errs, fmt.Errorf("ports: %w", err))
	}
	s.Ports = pm
	res := serviceRes{s: s}
	if gw := ps.GetWaypoint(); gw != nil {
		wp, host, port, err := convertGateway(gw)
		if err != nil {
			errs = append(errs, fmt.Errorf("waypoint: %w", err))
		}
		res.s.Waypoint, res.waypointHost, res.waypointPort = wp, host, port
	}
	return res, errors.Join(errs...)
}

// convertGateway returns either a fixed waypoint or the resource name of
// the waypoint's Service (resolved later).
func convertGateway(gw *workloadv1alpha1.GatewayAddress) (*model.Waypoint, string, uint16, error) {
	port := gw.GetHboneMtlsPort()
	if port == 0 || port > 65535 {
		return nil, "", 0, fmt.Errorf("hbone_mtls_port %d is not in 1..65535", port)
	}
	switch d := gw.GetDestination().(type) {
	case *workloadv1alpha1.GatewayAddress_Address:
		ip, err := ipFromBytes(d.Address.GetAddress())
		if err != nil {
			return nil, "", 0, err
		}
		return &model.Waypoint{Address: ip, Port: uint16(port)}, "", 0, nil
	case *workloadv1alpha1.GatewayAddress_Hostname:
		if d.Hostname.GetNamespace() == "" || d.Hostname.GetHostname() == "" {
			return nil, "", 0, errors.New("hostname needs namespace and hostname")
		}
		return nil, workloadv1alpha1.ServiceResourceName(d.Hostname.GetNamespace(), d.Hostname.GetHostname()), uint16(port), nil
	}
	return nil, "", 0, errors.New("neither address nor hostname is set")
}

// portMap converts Port mappings. zeroTarget allows target_port 0 (Service
// ports with a named targetPort); such a port maps to itself unless the
// chosen workload's services entry says otherwise.
func portMap(ports []*workloadv1alpha1.Port, zeroTarget bool) (model.PortMap, error) {
	pm := make(model.PortMap, len(ports))
	for _, p := range ports {
		sp, tp := p.GetServicePort(), p.GetTargetPort()
		if sp == 0 || sp > 65535 {
			return nil, fmt.Errorf("service_port %d is not in 1..65535", sp)
		}
		if tp > 65535 || (tp == 0 && !zeroTarget) {
			return nil, fmt.Errorf("target_port %d of service_port %d is not in 1..65535", tp, sp)
		}
		if tp == 0 {
			tp = sp
		}
		pm[uint16(sp)] = uint16(tp)
	}
	return pm, nil
}

// ipFromBytes converts a 4- or 16-byte address; IPv4-mapped IPv6 is
// refused (the contract sends IPv4 as 4 bytes).
func ipFromBytes(b []byte) (netip.Addr, error) {
	if len(b) != 4 && len(b) != 16 {
		return netip.Addr{}, fmt.Errorf("address of %d bytes: want 4 (IPv4) or 16 (IPv6)", len(b))
	}
	ip, _ := netip.AddrFromSlice(b)
	if ip.Is4In6() {
		return netip.Addr{}, fmt.Errorf("address %s is IPv4-mapped IPv6: IPv4 must be sent as 4 bytes", ip)
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("address %s is not a unicast address", ip)
	}
	return ip, nil
}

// checkAuthorization validates an Authorization resource as
// authorization.proto prescribes.
func checkAuthorization(name string, a *workloadv1alpha1.Authorization) error {
	if a.GetName() == "" || a.GetNamespace() == "" {
		return errors.New("name and namespace are required")
	}
	if got := a.ResourceName(); got != name {
		return fmt.Errorf("resource name %q does not match its content (want %q)", name, got)
	}
	if a.GetPeerAuthentication() != nil && len(a.GetRules()) > 0 {
		return errors.New("a peer-authentication policy must have no rules")
	}
	for i, r := range a.GetRules() {
		for j, c := range r.GetClauses() {
			if len(c.GetMatches()) == 0 {
				return fmt.Errorf("rules[%d].clauses[%d] has no matches", i, j)
			}
			for k, m := range c.GetMatches() {
				for _, sms := range [][]*workloadv1alpha1.StringMatch{m.GetPrincipals(), m.GetNotPrincipals(), m.GetNamespaces(), m.GetNotNamespaces()} {
					for _, sm := range sms {
						if sm.GetMatchType() == nil {
							return fmt.Errorf("rules[%d].clauses[%d].matches[%d]: a StringMatch sets no match kind", i, j, k)
						}
					}
				}
				for _, ps := range [][]*workloadv1alpha1.IPPrefix{m.GetSourceIps(), m.GetNotSourceIps()} {
					for _, p := range ps {
						bits := len(p.GetAddress()) * 8
						if bits != 32 && bits != 128 || int(p.GetLength()) > bits {
							return fmt.Errorf("rules[%d].clauses[%d].matches[%d]: bad IP prefix (%d address bytes, length %d)", i, j, k, len(p.GetAddress()), p.GetLength())
						}
					}
				}
			}
		}
	}
	if _, err := convertAuthorization(a); err != nil {
		return err
	}
	return nil
}

// mtlsMode derives a workload's port-independent inbound mTLS mode from
// the peer-authentication policies (authorization.proto, "mTLS mode",
// steps 2-5; shown by the admin API). The data path resolves the mode per
// port from the snapshot's policies (authz.MTLSMode), with this as the
// fallback. auths is keyed by resource name.
func mtlsMode(w workloadRes, auths map[string]*workloadv1alpha1.Authorization) model.MTLSMode {
	listed := map[string]bool{}
	for _, p := range w.policies {
		listed[p] = true
	}
	// Steps 2 (WORKLOAD_SELECTOR), 3 (NAMESPACE), 4 (GLOBAL); smallest name
	// wins within a step.
	modes := [3]workloadv1alpha1.MTLSMode{}
	names := slices.Sorted(maps.Keys(auths))
	for _, name := range names {
		a := auths[name]
		pa := a.GetPeerAuthentication()
		if pa == nil || pa.GetMode() == workloadv1alpha1.MTLSMode_UNSET {
			continue
		}
		step := -1
		switch a.GetScope() {
		case workloadv1alpha1.Scope_WORKLOAD_SELECTOR:
			if listed[name] {
				step = 0
			}
		case workloadv1alpha1.Scope_NAMESPACE:
			if a.GetNamespace() == w.w.Namespace {
				step = 1
			}
		case workloadv1alpha1.Scope_GLOBAL:
			step = 2
		}
		if step >= 0 && modes[step] == workloadv1alpha1.MTLSMode_UNSET {
			modes[step] = pa.GetMode()
		}
	}
	for _, m := range modes {
		switch m {
		case workloadv1alpha1.MTLSMode_STRICT:
			return model.MTLSStrict
		case workloadv1alpha1.MTLSMode_PERMISSIVE, workloadv1alpha1.MTLSMode_DISABLE:
			return model.MTLSPermissive
		}
	}
	return model.MTLSPermissive
}

// buildSnapshot turns the accepted resources into a state.Snapshot. The
// resources come from a live stream and may briefly disagree (a pod's IP
// reused before the old pod's removal arrived, a workload naming a service
// not received yet); buildSnapshot resolves that instead of failing: a
// duplicate address stays with the workload whose UID sorts first (the
// other loses that address), a duplicate VIP with the service whose key
// sorts first, an address that is also a VIP with the service, and
// unknown services are dropped from a workload's services. Each such fix
// is logged at debug level.
func buildSnapshot(addrs map[string]address, auths map[string]*workloadv1alpha1.Authorization, log *slog.Logger) (*state.Snapshot, error) {
	var workloads []workloadRes
	services := map[string]serviceRes{}
	for _, a := range addrs {
		switch {
		case a.workload != nil:
			workloads = append(workloads, *a.workload)
		case a.service != nil:
			services[a.service.s.Key()] = *a.service
		}
	}
	slices.SortFunc(workloads, func(a, b workloadRes) int { return cmp.Compare(a.w.UID, b.w.UID) })

	// A waypoint given by hostname stays a reference to its Service: the
	// outbound planner resolves it to a healthy waypoint pod per connection,
	// and refuses the connection while the Service is unknown (dropping the
	// waypoint here would let traffic bypass it).
	resolve := func(wp *model.Waypoint, host string, port uint16) *model.Waypoint {
		if wp != nil || host == "" {
			return wp
		}
		if _, ok := services[host]; !ok {
			log.Debug("waypoint service not received yet; connections through it are refused until it arrives", "service", host)
		}
		return &model.Waypoint{Service: host, Port: port}
	}

	vips := map[netip.Addr]string{}
	outSvcs := make([]model.Service, 0, len(services))
	for _, key := range slices.Sorted(maps.Keys(services)) {
		sr := services[key]
		s := sr.s
		s.VIPs = nil
		for _, vip := range sr.s.VIPs {
			if other, dup := vips[vip]; dup {
				log.Debug("VIP claimed by two services; keeping the first", "vip", vip, "kept", other, "dropped", key)
				continue
			}
			vips[vip] = key
			s.VIPs = append(s.VIPs, vip)
		}
		s.Waypoint = resolve(s.Waypoint, sr.waypointHost, sr.waypointPort)
		outSvcs = append(outSvcs, s)
	}

	ips := map[netip.Addr]string{}
	outWls := make([]model.Workload, 0, len(workloads))
	for _, wr := range workloads {
		w := wr.w
		w.Addresses = nil
		for _, ip := range wr.w.Addresses {
			if other, dup := ips[ip]; dup {
				log.Debug("address claimed by two workloads; keeping the first", "address", ip, "kept", other, "dropped", w.UID)
				continue
			}
			if svc, isVIP := vips[ip]; isVIP {
				log.Debug("workload address is also a service VIP; ignoring it", "address", ip, "workload", w.UID, "service", svc)
				continue
			}
			ips[ip] = w.UID
			w.Addresses = append(w.Addresses, ip)
		}
		if len(wr.w.Services) > 0 {
			w.Services = make(map[string]model.PortMap, len(wr.w.Services))
			for key, pm := range wr.w.Services {
				if _, ok := services[key]; !ok {
					log.Debug("workload backs a service not received yet", "workload", w.UID, "service", key)
					continue
				}
				w.Services[key] = pm
			}
		}
		w.Waypoint = resolve(w.Waypoint, wr.waypointHost, wr.waypointPort)
		w.MTLSMode = mtlsMode(wr, auths)
		w.AuthorizationPolicies = slices.Clone(wr.policies)
		outWls = append(outWls, w)
	}
	policies := make([]model.Policy, 0, len(auths))
	for _, name := range slices.Sorted(maps.Keys(auths)) {
		p, err := convertAuthorization(auths[name])
		if err != nil {
			// Accepted resources passed checkAuthorization, which converts.
			log.Debug("authorization resource does not convert; ignoring it", "name", name, "error", err)
			continue
		}
		policies = append(policies, p)
	}
	return state.NewSnapshotWithPolicies(outWls, outSvcs, policies)
}
