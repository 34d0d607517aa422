package waypointxds

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// NodePrefix starts the node id of every waypoint; the dispatcher routes
// streams by it.
const NodePrefix = "waypoint~"

// NodeID returns a waypoint pod's node id:
// waypoint~<podIP>~<pod>.<namespace>~<namespace>.svc.<clusterDomain>.
func NodeID(podIP netip.Addr, pod, namespace, clusterDomain string) string {
	if clusterDomain == "" {
		clusterDomain = defaultDomain
	}
	return NodePrefix + podIP.Unmap().String() + "~" + pod + "." + namespace + "~" + namespace + ".svc." + clusterDomain
}

// NodeInfo is what a waypoint's node id and metadata say.
type NodeInfo struct {
	PodIP     netip.Addr
	Pod       string
	Namespace string
	// Gateway is the GATEWAY metadata, "<namespace>/<name>".
	Gateway string
}

// ParseNode checks a waypoint's node (XDS.md §1) and returns what it says.
// The errors say what the waypoint must send.
func ParseNode(node *corev3.Node) (NodeInfo, error) {
	id := node.GetId()
	parts := strings.Split(id, "~")
	if len(parts) != 4 || parts[0]+"~" != NodePrefix {
		return NodeInfo{}, fmt.Errorf("waypoint node id %q must be waypoint~<podIP>~<pod>.<namespace>~<namespace>.svc.<domain>", id)
	}
	ip, err := netip.ParseAddr(parts[1])
	if err != nil {
		return NodeInfo{}, fmt.Errorf("waypoint node id %q: %q is not the pod IP: %w", id, parts[1], err)
	}
	pod, ns, ok := strings.Cut(parts[2], ".")
	if !ok || pod == "" || ns == "" || strings.Contains(ns, ".") {
		return NodeInfo{}, fmt.Errorf("waypoint node id %q: %q must be <pod>.<namespace>", id, parts[2])
	}
	if !strings.HasPrefix(parts[3], ns+".svc.") {
		return NodeInfo{}, fmt.Errorf("waypoint node id %q: %q must be %s.svc.<cluster domain>", id, parts[3], ns)
	}
	info := NodeInfo{PodIP: ip.Unmap(), Pod: pod, Namespace: ns}
	gw := stringField(node.GetMetadata(), MetadataGateway)
	gwNS, gwName, ok := strings.Cut(gw, "/")
	if !ok || gwNS == "" || gwName == "" || strings.Contains(gwName, "/") {
		return NodeInfo{}, fmt.Errorf("waypoint node %q: metadata %s=%q must be the <namespace>/<name> of the Gateway it serves (is the waypoint Deployment's GATEWAY env set?)", id, MetadataGateway, gw)
	}
	if gwNS != ns {
		return NodeInfo{}, fmt.Errorf("waypoint node %q: Gateway %q is in another namespace than the pod (%s): a waypoint only serves a Gateway of its own namespace", id, gw, ns)
	}
	if mns := stringField(node.GetMetadata(), MetadataNamespace); mns != "" && mns != ns {
		return NodeInfo{}, fmt.Errorf("waypoint node %q: metadata %s=%q disagrees with the node id namespace %q", id, MetadataNamespace, mns, ns)
	}
	info.Gateway = gw
	return info, nil
}

func stringField(s *structpb.Struct, key string) string {
	return s.GetFields()[key].GetStringValue()
}
