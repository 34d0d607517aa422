package check

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/version"
)

// MinKubernetes is the oldest Kubernetes minor version Ambit installs on:
// its CRDs validate policies with CEL rules (x-kubernetes-validations),
// which are GA and always on from 1.29.
var MinKubernetes = Version{Major: 1, Minor: 29}

// MinKernel is the oldest Linux kernel Ambit runs on. The node agent writes
// each pod's redirection rules with iptables' nf_tables backend, using the
// xtables matches mark, connmark, conntrack and addrtype through nft_compat;
// ztunnel opens its listeners inside pod network namespaces with
// SO_REUSEPORT and IP_TRANSPARENT/IPV6_TRANSPARENT (to keep the client's
// source address). 4.18 (RHEL 8) is the oldest kernel distributions
// support the iptables nf_tables backend on.
var MinKernel = Version{Major: 4, Minor: 18}

// NftablesKernel is the oldest kernel for nftables-mode redirection, the
// floor the nft tool's 1.0.1+ rule syntax needs (as for kube-proxy's
// nftables mode).
var NftablesKernel = Version{Major: 5, Minor: 13}

// Version is a major.minor version.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	return v.Major < w.Major || (v.Major == w.Major && v.Minor < w.Minor)
}

var leadingVersion = regexp.MustCompile(`^v?(\d+)\.(\d+)`)

// ParseVersion reads the major.minor prefix of a kernel release
// ("6.1.0-18-amd64", "4.18.0-425.el8.x86_64") or a Kubernetes git version
// ("v1.34.4").
func ParseVersion(s string) (Version, bool) {
	m := leadingVersion.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Version{}, false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	return Version{major, minor}, err1 == nil && err2 == nil
}

// Cluster is what the pre-flight rules read.
type Cluster struct {
	// Namespace is Ambit's namespace.
	Namespace string
	// Server is the apiserver's version; nil with ServerErr when the
	// apiserver could not be reached.
	Server    *version.Info
	ServerErr error
	Nodes     []corev1.Node
	// Namespaces are the names of all namespaces.
	Namespaces []string
	// DaemonSets are the DaemonSets of all namespaces.
	DaemonSets []appsv1.DaemonSet
	// CiliumConfig is the data of ConfigMap kube-system/cilium-config, nil
	// when there is none.
	CiliumConfig map[string]string
}

// Preflight runs every pre-flight rule. When the apiserver is unreachable
// it returns that alone: nothing else can be known.
func Preflight(c Cluster) []Result {
	if c.Server == nil {
		return []Result{APIServer(c.Server, c.ServerErr)}
	}
	out := []Result{APIServer(c.Server, nil)}
	out = append(out, Nodes(c.Nodes)...)
	out = append(out, Kernels(c.Nodes)...)
	out = append(out, Meshes(c)...)
	return out
}

// APIServer checks that the apiserver answered and is new enough.
func APIServer(v *version.Info, err error) Result {
	if v == nil {
		return fail("check --kubeconfig and --context (kubectl cluster-info shows where they point) and that the cluster is up",
			"cannot reach the Kubernetes apiserver (%v)", err)
	}
	got, parsed := ParseVersion(v.GitVersion)
	if !parsed {
		got, parsed = ParseVersion(v.Major + "." + strings.TrimSuffix(v.Minor, "+"))
	}
	if !parsed {
		return warn(fmt.Sprintf("make sure the cluster runs Kubernetes %s or newer", MinKubernetes),
			"apiserver reachable, but its version %q cannot be read", v.GitVersion)
	}
	if got.Less(MinKubernetes) {
		return fail(fmt.Sprintf("upgrade the cluster to Kubernetes %s or newer (Ambit's CRDs use CEL validation rules)", MinKubernetes),
			"Kubernetes %s is too old", v.GitVersion)
	}
	return ok("apiserver reachable, Kubernetes %s", v.GitVersion)
}

// Nodes checks that there are nodes and every node is Ready. A node whose
// runtime reports NetworkReady=false has no primary CNI configured: Ambit's
// CNI plugin chains after the primary one, it does not replace it.
func Nodes(nodes []corev1.Node) []Result {
	if len(nodes) == 0 {
		return []Result{fail("join nodes to the cluster (kubectl get nodes)", "the cluster has no nodes")}
	}
	var out []Result
	var ready []string
	for _, n := range nodes {
		cond := nodeReady(n)
		switch {
		case cond != nil && cond.Status == corev1.ConditionTrue:
			ready = append(ready, n.Name)
		case cond != nil && isNetworkNotReady(cond.Message):
			out = append(out, fail(fmt.Sprintf("install a primary CNI plugin (a config in /etc/cni/net.d on the node); Ambit chains after it: kubectl describe node %s", n.Name),
				"node %s is not Ready: its container runtime has no network configured (NetworkReady=false)", n.Name))
		default:
			why := "no Ready condition reported"
			if cond != nil {
				why = strings.TrimSpace(cond.Reason + " " + cond.Message)
			}
			out = append(out, fail("kubectl describe node "+n.Name+" (is the kubelet running?)", "node %s is not Ready (%s)", n.Name, why))
		}
	}
	if len(ready) > 0 {
		out = append([]Result{ok("%d node(s) Ready with a CNI network: %s", len(ready), joinNames(ready))}, out...)
	}
	return out
}

func nodeReady(n corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func isNetworkNotReady(msg string) bool {
	return strings.Contains(msg, "NetworkReady=false") || strings.Contains(msg, "cni config uninitialized") ||
		strings.Contains(msg, "cni plugin not initialized")
}

// Kernels checks each node's kernel (Node.status.nodeInfo.kernelVersion)
// against MinKernel, and notes nodes below NftablesKernel.
func Kernels(nodes []corev1.Node) []Result {
	var out, old []Result
	var good, noNft []string
	for _, n := range nodes {
		k := n.Status.NodeInfo.KernelVersion
		v, parsed := ParseVersion(k)
		switch {
		case !parsed:
			out = append(out, warn(fmt.Sprintf("make sure node %s runs Linux %s or newer", n.Name, MinKernel),
				"node %s reports kernel %q, which cannot be read as a version", n.Name, k))
		case v.Less(MinKernel):
			old = append(old, fail(fmt.Sprintf("upgrade node %s to Linux %s or newer: the node agent needs the iptables nf_tables backend (with mark, connmark, conntrack and addrtype matches) and ztunnel needs IP_TRANSPARENT and SO_REUSEPORT in pod network namespaces", n.Name, MinKernel),
				"node %s runs kernel %s, older than %s", n.Name, k, MinKernel))
		case v.Less(NftablesKernel):
			noNft = append(noNft, n.Name)
			good = append(good, n.Name)
		default:
			good = append(good, n.Name)
		}
	}
	if len(good) > 0 {
		out = append([]Result{ok("kernel %s or newer on %d node(s)", MinKernel, len(good))}, out...)
	}
	if len(noNft) > 0 {
		out = append(out, warn("keep the default iptables redirection mode on these nodes",
			"node(s) %s run a kernel older than %s, too old for nftables redirection", joinNames(noNft), NftablesKernel))
	}
	return append(out, old...)
}

// Meshes looks for other meshes that would capture the same pods.
//
//   - Istio ambient (a ztunnel DaemonSet outside Ambit's namespace) uses the
//     same in-pod ports (15001, 15006, 15008): two node proxies cannot both
//     capture a pod. Error.
//   - istio-cni without Istio's ztunnel only redirects sidecar-injected pods,
//     which Ambit never enrols: warning.
//   - Istio's control plane namespace (istio-system): sidecar pods are left
//     alone and interoperate; warning, with the migration path.
//   - Linkerd (namespace linkerd, linkerd-cni): Ambit does not recognise
//     linkerd-proxy sidecars, so enrolling a Linkerd-injected namespace
//     would capture the proxy's traffic too: warning.
//   - Cilium: cni.exclusive removes other CNI configurations, including
//     Ambit's chained plugin (error); Cilium's own mesh (Envoy, mutual
//     auth) overlaps Ambit's (warning); socket-level load balancing in pod
//     namespaces rewrites Service VIPs before Ambit sees them (warning).
func Meshes(c Cluster) []Result {
	var out []Result
	dsIn := func(name string) []string {
		var nss []string
		for _, ds := range c.DaemonSets {
			if ds.Name == name && ds.Namespace != c.Namespace {
				nss = append(nss, ds.Namespace)
			}
		}
		return nss
	}
	istioZtunnel := dsIn("ztunnel")
	for _, ns := range istioZtunnel {
		out = append(out, fail(fmt.Sprintf("remove Istio's ambient data plane first (istioctl uninstall --purge, or helm -n %s uninstall ztunnel istio-cni)", ns),
			"Istio ambient's ztunnel DaemonSet runs in namespace %s: it captures pods on the same ports as Ambit", ns))
	}
	if len(istioZtunnel) == 0 {
		for _, ns := range dsIn("istio-cni-node") {
			out = append(out, warn("make sure no namespace is labelled istio.io/dataplane-mode=ambient; Ambit leaves sidecar-injected pods alone",
				"istio-cni runs in namespace %s", ns))
		}
	}
	if slices.Contains(c.Namespaces, "istio-system") && c.Namespace != "istio-system" {
		out = append(out, warn("pods with Istio sidecars are never enrolled and keep working next to ambient pods; do not label a namespace for both meshes",
			"Istio is installed (namespace istio-system)"))
	}
	if slices.Contains(c.Namespaces, "linkerd") {
		out = append(out, warn("do not enrol namespaces whose pods carry linkerd-proxy (linkerd.io/inject), or remove the injection first",
			"Linkerd is installed (namespace linkerd)"))
	}
	for _, ns := range dsIn("linkerd-cni") {
		out = append(out, warn("do not enrol namespaces whose pods carry linkerd-proxy", "linkerd-cni runs in namespace %s", ns))
	}
	if cfg := c.CiliumConfig; cfg != nil {
		if cfg["cni-exclusive"] == "true" {
			out = append(out, fail("set cni.exclusive=false in Cilium's Helm values (cilium upgrade --set cni.exclusive=false)",
				"Cilium is configured with cni-exclusive=true: it deletes other CNI configurations, including Ambit's chained plugin"))
		}
		if cfg["enable-envoy-config"] == "true" || cfg["mesh-auth-enabled"] == "true" {
			out = append(out, warn("do not enrol namespaces that Cilium's service mesh (CiliumEnvoyConfig, mutual authentication) already handles",
				"Cilium's own service mesh is enabled"))
		}
		if cfg["kube-proxy-replacement"] == "true" && cfg["bpf-lb-sock-hostns-only"] != "true" {
			out = append(out, warn("set socketLB.hostNamespaceOnly=true in Cilium's Helm values",
				"Cilium's socket load balancing runs in pod namespaces: it replaces Service VIPs before ztunnel sees them, so service-level policy and waypoints do not apply"))
		}
	}
	if len(out) == 0 {
		out = append(out, ok("no other mesh found (Istio, Linkerd, Cilium service mesh)"))
	}
	return out
}
