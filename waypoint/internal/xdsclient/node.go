package xdsclient

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Node metadata keys (XDS.md §1).
const (
	MetadataGateway        = "GATEWAY"
	MetadataNamespace      = "NAMESPACE"
	MetadataPodName        = "POD_NAME"
	MetadataServiceAccount = "SERVICE_ACCOUNT"
	MetadataInstanceIPs    = "INSTANCE_IPS"
)

// NodeInfo is what a waypoint pod says about itself on its xDS stream.
type NodeInfo struct {
	// PodIPs are the pod's IPs; the first one is in the node id.
	PodIPs         []netip.Addr
	PodName        string
	Namespace      string
	ServiceAccount string
	// Gateway is "<namespace>/<name>" of the Gateway served.
	Gateway       string
	ClusterDomain string
}

// Node returns the xDS node of XDS.md §1:
// id waypoint~<podIP>~<pod>.<ns>~<ns>.svc.<clusterDomain>, cluster the
// Gateway name, and string metadata GATEWAY, NAMESPACE, POD_NAME,
// SERVICE_ACCOUNT, INSTANCE_IPS.
func (n NodeInfo) Node() (*corev3.Node, error) {
	if len(n.PodIPs) == 0 || n.PodName == "" || n.Namespace == "" || n.ClusterDomain == "" {
		return nil, errors.New("xdsclient: the node needs pod IPs, pod name, namespace and cluster domain")
	}
	gwNS, gwName, ok := strings.Cut(n.Gateway, "/")
	if !ok || gwNS == "" || gwName == "" || strings.Contains(gwName, "/") {
		return nil, fmt.Errorf("xdsclient: gateway %q must be <namespace>/<name>", n.Gateway)
	}
	if gwNS != n.Namespace {
		return nil, fmt.Errorf("xdsclient: gateway %q is not in the pod's namespace %q (the control plane refuses such a node)", n.Gateway, n.Namespace)
	}
	ips := make([]string, len(n.PodIPs))
	for i, ip := range n.PodIPs {
		ips[i] = ip.Unmap().String()
	}
	md, err := structpb.NewStruct(map[string]any{
		MetadataGateway:        n.Gateway,
		MetadataNamespace:      n.Namespace,
		MetadataPodName:        n.PodName,
		MetadataServiceAccount: n.ServiceAccount,
		MetadataInstanceIPs:    strings.Join(ips, ","),
	})
	if err != nil {
		return nil, fmt.Errorf("xdsclient: node metadata: %w", err)
	}
	return &corev3.Node{
		Id:       "waypoint~" + ips[0] + "~" + n.PodName + "." + n.Namespace + "~" + n.Namespace + ".svc." + n.ClusterDomain,
		Cluster:  gwName,
		Metadata: md,
	}, nil
}
