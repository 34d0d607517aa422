package migrate

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// The verify step's second half: capture (the pod annotation the node
// agent sets) says the redirect is in place, not that ztunnel serves the
// pod. Ambit's ztunnel on the pod's node must also hold the pod as a
// captured workload with a Valid certificate for the pod's SPIFFE
// identity, which is what it presents on every HBONE connection to and
// from the pod.

// Metric names and labels of ztunnel's Istio-shaped counters the verify
// step reads (ztunnel/internal/metrics).
const (
	metricConnectionsOpened = "istio_tcp_connections_opened_total"
	securityMutualTLS       = "mutual_tls"
)

// Ztunnels is what the verify step read from the ztunnel of each node.
type Ztunnels struct {
	// TrustDomain is the mesh's trust domain (ztunnel's --trust-domain).
	TrustDomain string
	// Nodes maps node names to their ztunnel's answers; a node missing
	// here runs no ztunnel.
	Nodes map[string]ZtunnelState
}

// ZtunnelState is one node's ztunnel, as read through its admin and
// metrics ports.
type ZtunnelState struct {
	// Pod is the ztunnel pod (namespace/name), for the messages.
	Pod string
	// Dump is its /config_dump; nil with DumpErr set when unreadable.
	Dump    *adminapi.ConfigDump
	DumpErr error
	// Metrics is its Prometheus /metrics text; nil when unreadable (the
	// traffic report is informational, so that is not a failure).
	Metrics []byte
}

// SPIFFEID returns the SPIFFE ID of service account sa in namespace ns.
func SPIFFEID(trustDomain, ns, sa string) string {
	if sa == "" {
		sa = "default"
	}
	return identity.ID{TrustDomain: trustDomain, Namespace: ns, ServiceAccount: sa}.String()
}

// IdentityProblem says why ztunnel does not serve captured pod p with its
// identity yet, or "" when it does: the pod's node runs a readable
// ztunnel, which holds the pod as a captured workload of the pod's
// service account and a Valid certificate for that identity.
func IdentityProblem(p corev1.Pod, z Ztunnels) string {
	node := p.Spec.NodeName
	st, ok := z.Nodes[node]
	switch {
	case !ok:
		return fmt.Sprintf("no ztunnel runs on node %s (kubectl get daemonset ztunnel)", node)
	case st.Dump == nil:
		return fmt.Sprintf("cannot read ztunnel %s on node %s: %v", st.Pod, node, st.DumpErr)
	}
	i := slices.IndexFunc(st.Dump.Workloads, func(w adminapi.WorkloadDump) bool {
		return w.Namespace == p.Namespace && w.Name == p.Name
	})
	if i < 0 {
		return fmt.Sprintf("ztunnel %s does not know the pod yet (control plane push pending?)", st.Pod)
	}
	w := st.Dump.Workloads[i]
	sa := cmp.Or(p.Spec.ServiceAccountName, "default")
	switch {
	case !w.Captured:
		return fmt.Sprintf("ztunnel %s does not serve the pod yet (the node agent has not handed it over)", st.Pod)
	case w.ServiceAccount != sa:
		return fmt.Sprintf("ztunnel %s has it as service account %q, the pod runs as %q", st.Pod, w.ServiceAccount, sa)
	}
	id := SPIFFEID(z.TrustDomain, p.Namespace, sa)
	j := slices.IndexFunc(st.Dump.Certificates, func(c adminapi.CertDump) bool { return c.Identity == id })
	if j < 0 {
		return fmt.Sprintf("ztunnel %s holds no certificate for %s yet", st.Pod, id)
	}
	if c := st.Dump.Certificates[j]; c.State != adminapi.CertValid {
		msg := fmt.Sprintf("ztunnel %s's certificate for %s is %s", st.Pod, id, c.State)
		if c.LastError != "" {
			msg += " (" + c.LastError + ")"
		}
		return msg
	}
	return ""
}

// Inbound counts the inbound connections to one identity ztunnels
// reported (reporter="destination") since they started.
type Inbound struct {
	Identity  string
	MutualTLS int
	Plaintext int
	// Sources are the peer identities of the mTLS connections, sorted.
	Sources []string
}

// InboundTraffic sums, over every node's ztunnel metrics, the
// connections ztunnel accepted for the pods of namespace ns, by
// destination identity, sorted by identity. A node whose metrics did not
// parse is named in the error (the others still count).
func InboundTraffic(ns string, z Ztunnels) ([]Inbound, error) {
	by := map[string]*Inbound{}
	var errs []string
	nodes := make([]string, 0, len(z.Nodes))
	for n := range z.Nodes {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		st := z.Nodes[n]
		if st.Metrics == nil {
			continue
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(st.Metrics))
		if err != nil {
			errs = append(errs, fmt.Sprintf("node %s: %v", n, err))
			continue
		}
		fam, ok := fams[metricConnectionsOpened]
		if !ok {
			continue
		}
		for _, m := range fam.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["reporter"] != "destination" || l["destination_workload_namespace"] != ns {
				continue
			}
			// A counter, or untyped when the text has no TYPE line.
			v := int(m.GetCounter().GetValue() + m.GetUntyped().GetValue())
			if v == 0 {
				continue
			}
			id := l["destination_principal"]
			in := by[id]
			if in == nil {
				in = &Inbound{Identity: id}
				by[id] = in
			}
			if l["connection_security_policy"] == securityMutualTLS {
				in.MutualTLS += v
				if src := l["source_principal"]; src != "" && !slices.Contains(in.Sources, src) {
					in.Sources = append(in.Sources, src)
				}
			} else {
				in.Plaintext += v
			}
		}
	}
	out := make([]Inbound, 0, len(by))
	for _, in := range by {
		slices.Sort(in.Sources)
		out = append(out, *in)
	}
	slices.SortFunc(out, func(a, b Inbound) int { return cmp.Compare(a.Identity, b.Identity) })
	if len(errs) > 0 {
		return out, fmt.Errorf("ztunnel metrics that do not parse: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

// TrafficReport is the verify step's closing lines: the inbound HBONE
// (mutual TLS) and plaintext connections per identity of namespace ns,
// flagging an identity that is none of the pods' own (expected holds
// the SPIFFE IDs of the namespace's captured pods). No traffic yet is
// said as such: the switch does not generate any.
func TrafficReport(traffic []Inbound, expected []string) []string {
	if len(traffic) == 0 {
		return []string{"no inbound connections to the namespace through ztunnel yet (the counters start when ztunnel does)"}
	}
	var out []string
	for _, in := range traffic {
		line := fmt.Sprintf("inbound to %s: %d over HBONE (mutual TLS)", in.Identity, in.MutualTLS)
		if len(in.Sources) > 0 {
			line += " from " + strings.Join(in.Sources, ", ")
		}
		if in.Plaintext > 0 {
			line += fmt.Sprintf(", %d plaintext (PERMISSIVE lets peers outside the mesh in)", in.Plaintext)
		}
		if in.MutualTLS > 0 && !slices.Contains(expected, in.Identity) {
			line += " — not the identity of any pod of the namespace now"
		}
		out = append(out, line)
	}
	return out
}
