package migrate

import (
	"fmt"

	apinet "istio.io/api/networking/v1alpha3"
	clinet "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
)

// destinationRule converts a DestinationRule's traffic policy into a
// BackendPolicy for its host Service, one per port-level setting (the
// targetRef's sectionName is the Service port's name) and one per subset
// whose per-version Service exists.
func (c *converter) destinationRule(dr *clinet.DestinationRule) Entry {
	e := &entry{Entry: Entry{Source: Ref{KindDestinationRule, dr.Name}}}
	spec := &dr.Spec
	s := c.service(spec.Host)
	if s == nil {
		e.gap("host", fmt.Sprintf("%q is not a Service of namespace %s: BackendPolicies target Services", spec.Host, c.ns))
		return e.Entry
	}
	if spec.WorkloadSelector != nil {
		e.gap("workloadSelector", "BackendPolicies apply to every client of the Service, not to selected clients")
	}
	if len(spec.ExportTo) > 0 {
		e.gap("exportTo", "BackendPolicies have no visibility setting")
	}
	if tp := spec.TrafficPolicy; tp != nil {
		c.backendPolicy(e, "trafficPolicy", dr.Name, s.Name, "", tp)
		for i, pl := range tp.PortLevelSettings {
			path := fmt.Sprintf("trafficPolicy.portLevelSettings[%d]", i)
			port := servicePort(s, pl.GetPort().GetNumber())
			if port == nil || port.Name == "" {
				e.gap(path, fmt.Sprintf("port %d is not a named port of Service %s: a BackendPolicy targets a port by its name (sectionName)", pl.GetPort().GetNumber(), s.Name))
				continue
			}
			c.backendPolicy(e, path, dr.Name+"-"+port.Name, s.Name, port.Name, &apinet.TrafficPolicy{
				LoadBalancer: pl.LoadBalancer, ConnectionPool: pl.ConnectionPool,
				OutlierDetection: pl.OutlierDetection, Tls: pl.Tls,
			})
		}
	}
	for i, sub := range spec.Subsets {
		path := fmt.Sprintf("subsets[%d]", i)
		sel := map[string]string{}
		for k, v := range s.Spec.Selector {
			sel[k] = v
		}
		for k, v := range sub.Labels {
			sel[k] = v
		}
		vs := c.serviceWithSelector(sel)
		if vs == nil {
			e.gap(path, fmt.Sprintf("subset %s: Gateway API routes to Services, not subsets: create a Service per subset selecting its labels (%s)", sub.Name, labelString(sel)))
			continue
		}
		if sub.TrafficPolicy != nil {
			c.backendPolicy(e, path+".trafficPolicy", dr.Name+"-"+sub.Name, vs.Name, "", sub.TrafficPolicy)
			if len(sub.TrafficPolicy.PortLevelSettings) > 0 {
				e.gap(path+".trafficPolicy.portLevelSettings", "per-port settings of a subset are not converted")
			}
		}
	}
	return e.Entry
}

func servicePort(s *corev1.Service, n uint32) *corev1.ServicePort {
	for i := range s.Spec.Ports {
		if uint32(s.Spec.Ports[i].Port) == n {
			return &s.Spec.Ports[i]
		}
	}
	return nil
}

// backendPolicy adds the BackendPolicy of one traffic policy (top level,
// a port's or a subset's), if anything in it maps.
func (c *converter) backendPolicy(e *entry, path, name, service, section string, tp *apinet.TrafficPolicy) {
	spec := map[string]any{}
	if cp := tp.ConnectionPool; cp != nil {
		pool := map[string]any{}
		if t := cp.Tcp; t != nil {
			tcp := map[string]any{}
			if t.MaxConnections != 0 {
				tcp["maxConnections"] = int64(t.MaxConnections)
			}
			e.setDuration(tcp, "connectTimeout", path+".connectionPool.tcp.connectTimeout", t.ConnectTimeout)
			if t.TcpKeepalive != nil {
				e.gap(path+".connectionPool.tcp.tcpKeepalive", "ztunnel's HBONE connections have their own keepalive; not configurable per Service")
			}
			if t.MaxConnectionDuration != nil || t.IdleTimeout != nil {
				e.gap(path+".connectionPool.tcp", "maxConnectionDuration and idleTimeout have no BackendPolicy field")
			}
			if len(tcp) > 0 {
				pool["tcp"] = tcp
			}
		}
		if h := cp.Http; h != nil {
			http := map[string]any{}
			if h.Http1MaxPendingRequests != 0 {
				http["maxPendingRequests"] = int64(h.Http1MaxPendingRequests)
			}
			if h.Http2MaxRequests != 0 {
				http["maxRequests"] = int64(h.Http2MaxRequests)
			}
			if h.MaxRequestsPerConnection != 0 {
				http["maxRequestsPerConnection"] = int64(h.MaxRequestsPerConnection)
			}
			if h.MaxRetries != 0 {
				e.gap(path+".connectionPool.http.maxRetries", "BackendPolicy has no retry budget; retries are set per HTTPRoute rule")
			}
			if h.IdleTimeout != nil || h.H2UpgradePolicy != 0 || h.UseClientProtocol || h.MaxConcurrentStreams != 0 {
				e.gap(path+".connectionPool.http", "idleTimeout, h2UpgradePolicy, useClientProtocol and maxConcurrentStreams have no BackendPolicy field")
			}
			if len(http) > 0 {
				pool["http"] = http
			}
		}
		if len(pool) > 0 {
			spec["connectionPool"] = pool
		}
	}
	if od := tp.OutlierDetection; od != nil {
		out := map[string]any{}
		if v := od.GetConsecutive_5XxErrors(); v != nil {
			out["consecutive5xxErrors"] = int64(v.GetValue())
		} else if od.ConsecutiveErrors != 0 { //nolint:staticcheck // the deprecated field is still served
			out["consecutive5xxErrors"] = int64(od.ConsecutiveErrors) //nolint:staticcheck
		}
		if v := od.ConsecutiveGatewayErrors; v != nil {
			out["consecutiveGatewayErrors"] = int64(v.GetValue())
		}
		e.setDuration(out, "interval", path+".outlierDetection.interval", od.Interval)
		e.setDuration(out, "baseEjectionTime", path+".outlierDetection.baseEjectionTime", od.BaseEjectionTime)
		if od.MaxEjectionPercent != 0 {
			out["maxEjectionPercent"] = int64(od.MaxEjectionPercent)
		}
		if od.MinHealthPercent != 0 {
			e.gap(path+".outlierDetection.minHealthPercent", "BackendPolicy always ejects up to maxEjectionPercent")
		}
		if od.SplitExternalLocalOriginErrors || od.ConsecutiveLocalOriginFailures != nil {
			e.gap(path+".outlierDetection", "local-origin failure counting has no BackendPolicy field (connect failures count as gateway errors)")
		}
		if len(out) > 0 {
			spec["outlierDetection"] = out
		}
	}
	if lb := tp.LoadBalancer; lb != nil {
		switch p := lb.LbPolicy.(type) {
		case *apinet.LoadBalancerSettings_Simple:
			switch p.Simple {
			case apinet.LoadBalancerSettings_ROUND_ROBIN:
				spec["loadBalancer"] = map[string]any{"algorithm": "RoundRobin"}
			case apinet.LoadBalancerSettings_LEAST_REQUEST, apinet.LoadBalancerSettings_LEAST_CONN: //nolint:staticcheck // LEAST_CONN is LEAST_REQUEST's old name
				spec["loadBalancer"] = map[string]any{"algorithm": "LeastRequest"}
			case apinet.LoadBalancerSettings_UNSPECIFIED:
			default:
				e.gap(path+".loadBalancer.simple", fmt.Sprintf("%s: BackendPolicy balances with RoundRobin, LeastRequest or EWMA", p.Simple))
			}
		case *apinet.LoadBalancerSettings_ConsistentHash:
			e.gap(path+".loadBalancer.consistentHash", "Ambit has no session affinity / consistent hashing load balancer")
		}
		if lb.LocalityLbSetting != nil {
			e.gap(path+".loadBalancer.localityLbSetting", "Ambit does not do locality-aware load balancing")
		}
		if lb.WarmupDurationSecs != nil || lb.Warmup != nil {
			e.gap(path+".loadBalancer.warmup", "BackendPolicy has no slow start")
		}
	}
	if tp.Tls != nil && tp.Tls.Mode != apinet.ClientTLSSettings_ISTIO_MUTUAL {
		e.gap(path+".tls", fmt.Sprintf("mode %s: ztunnel always uses mTLS between mesh workloads (what ISTIO_MUTUAL asked for); plaintext to a mesh backend and TLS origination are not supported", tp.Tls.Mode))
	}
	if tp.Tunnel != nil || tp.ProxyProtocol != nil || tp.RetryBudget != nil {
		e.gap(path, "tunnel, proxyProtocol and retryBudget have no BackendPolicy field")
	}
	if len(spec) == 0 {
		return
	}
	ref := map[string]any{"group": "", "kind": "Service", "name": service}
	if section != "" {
		ref["sectionName"] = section
	}
	spec["targetRefs"] = []any{ref}
	e.add(AmbitNetworkingAPI, "BackendPolicy", name, c.ns, spec)
}
