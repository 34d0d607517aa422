// Package cluster brings up and tears down a real multi-node Kubernetes cluster
// on one Linux machine: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on the host; each node a network namespace plus a mount
// namespace running containerd, kubelet and kube-proxy.
//
// Everything it creates is recorded in a state file before it is created, so
// Down can remove it again even after a crash of Up or of the machine's
// processes. It never adds firewall rules that match outside the cluster's own
// ranges.
package cluster

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
)

// Config describes one local cluster.
type Config struct {
	// Name identifies the cluster; it prefixes every host-visible resource
	// (netns, links, cgroups) so several harness users never collide.
	Name string
	// Nodes is the number of worker nodes (1..9).
	Nodes int
	// StateDir holds the cluster's runtime files (certificates, etcd data,
	// per-node containerd roots, logs, the recorded state).
	StateDir string
	// K8sBinDir holds kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kube-proxy and kubectl.
	K8sBinDir string
	// PauseBinary is the static pause binary packed as the sandbox image.
	PauseBinary string
	// CNIPluginDir holds the reference CNI plugins (bridge, host-local,
	// portmap, loopback) copied into every node's /opt/cni/bin.
	CNIPluginDir string
	// Images are docker-archive tarballs imported into every node at Up.
	Images []string
}

// Fixed address plan. The ranges are the cluster's own: the harness routes
// them into the cluster (or to "unreachable") so no packet for them ever
// leaves the machine.
var (
	NodeNet        = netip.MustParsePrefix("10.200.0.0/24")
	HostIP         = netip.MustParseAddr("10.200.0.1")
	PodCIDR        = netip.MustParsePrefix("10.244.0.0/16")
	ServiceCIDR    = netip.MustParsePrefix("10.96.0.0/16")
	APIServiceIP   = netip.MustParseAddr("10.96.0.1")
	APIServerPort  = 6443
	EtcdClientPort = 2379
	EtcdPeerPort   = 2380
	PauseImage     = "localhost/ambit-pause:dev"
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// Validate checks the config and says what to fix.
func (c Config) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("cluster name %q: use 1-8 lower-case letters and digits, starting with a letter (it prefixes interface names, which are limited to 15 characters)", c.Name)
	}
	if c.Nodes < 1 || c.Nodes > 9 {
		return fmt.Errorf("nodes = %d: the address plan supports 1 to 9 nodes", c.Nodes)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state dir %q must be an absolute path", c.StateDir)
	}
	return nil
}

// NodeName is the Kubernetes node name of node i (1-based).
func NodeName(i int) string { return fmt.Sprintf("node%d", i) }

// NodeIP is node i's address on the node network.
func NodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, 0, byte(10 + i)}) }

// names derived from the cluster name; all short enough for IFNAMSIZ.
func (c Config) bridgeName() string      { return c.Name + "-br" }
func (c Config) vethHost(i int) string   { return fmt.Sprintf("%s-n%d", c.Name, i) }
func (c Config) netnsName(i int) string  { return fmt.Sprintf("%s-node%d", c.Name, i) }
func (c Config) cgroupBase() string      { return "/ambit-" + c.Name }
func (c Config) nodeCgroup(i int) string { return fmt.Sprintf("%s/node%d", c.cgroupBase(), i) }
func (c Config) hostCgroup() string      { return c.cgroupBase() + "/host" }
func (c Config) nodeDir(i int) string    { return filepath.Join(c.StateDir, "nodes", NodeName(i)) }
func (c Config) logDir() string          { return filepath.Join(c.StateDir, "logs") }
func (c Config) pkiDir() string          { return filepath.Join(c.StateDir, "pki") }

// KubeconfigPath is the admin kubeconfig written for the user.
func (c Config) KubeconfigPath() string { return filepath.Join(c.StateDir, "admin.kubeconfig") }

// APIServerURL is the address kubectl and the nodes use.
func APIServerURL() string { return fmt.Sprintf("https://%s:%d", HostIP, APIServerPort) }

// K8sVersion is the Kubernetes release the harness runs; it must match the
// version pinned in e2e/k8sbuild/go.mod (checked by a unit test).
const K8sVersion = "v1.34.4"
