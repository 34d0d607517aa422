package testtopo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/socket"
)

// Options configure a Topology.
type Options struct {
	// Nodes is the number of nodes (1..MaxNodes); 0 means 2.
	Nodes int
	// PodsPerNode is the number of pods created on every node at New
	// (0..MaxPodsPerNode); more can be added with AddPod.
	PodsPerNode int
	// IPv6 gives nodes and pods an IPv6 address too (dual stack).
	IPv6 bool
	// Logger receives one line per step; nil discards.
	Logger *slog.Logger
}

// Node is a node's network namespace.
type Node struct {
	// Name is "node<N>", N from 1 (what a workloads file calls the node).
	Name string
	// Index is N.
	Index int
	// IP is the node's fabric address 10.10.0.N; IPv6 is fd00:a::N when
	// Options.IPv6 is set, else the zero Addr.
	IP, IPv6 netip.Addr
	// PodCIDR is 10.10.N.0/24 (PodCIDRv6 fd00:a:N::/64 with IPv6).
	PodCIDR, PodCIDRv6 netip.Prefix
	// NetnsName is the netns name (ip netns list); NetnsPath its file,
	// /run/netns/<NetnsName>.
	NetnsName, NetnsPath string
	// Pods are the pods on this node, in creation order.
	Pods []*Pod
}

// Pod is a pod's network namespace.
type Pod struct {
	// Name is "node<N>-pod<K>", K from 1.
	Name string
	// Index is K.
	Index int
	// Node is the node the pod runs on.
	Node *Node
	// IP is 10.10.N.(K+1); IPv6 is fd00:a:N::(K+1) with Options.IPv6.
	IP, IPv6 netip.Addr
	// NetnsName and NetnsPath as for Node.
	NetnsName, NetnsPath string
	// HostVeth is the node-side interface of the pod's veth ("p<K>").
	HostVeth string
}

// Addrs returns the pod's addresses (IPv4, then IPv6 if any).
func (p *Pod) Addrs() []netip.Addr {
	if p.IPv6.IsValid() {
		return []netip.Addr{p.IP, p.IPv6}
	}
	return []netip.Addr{p.IP}
}

// Topology is a running set of namespaces. Its methods are safe for
// concurrent use; Close (or the test cleanup of Setup) removes everything.
type Topology struct {
	// Nodes in index order (Nodes[0] is node1).
	Nodes []*Node
	// FabricNetnsPath is the netns holding the fabric bridge.
	FabricNetnsPath string

	opts   Options
	log    *slog.Logger
	base   string
	fabric string

	mu        sync.Mutex
	closed    bool
	created   []string // netns names, creation order
	handles   map[string]*socket.Netns
	procs     []*Process
	listeners []io.Closer
}

var topoSeq atomic.Int64

// ipTimeout bounds every `ip` invocation.
const ipTimeout = 30 * time.Second

// Setup builds a topology for a test: it fails the test (t.Fatal) if the
// process is not root or building fails, and registers a t.Cleanup that
// stops the processes and removes every namespace. When the test failed,
// the cleanup logs the output of the processes started with Start.
func Setup(t testing.TB, opts Options) *Topology {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("testtopo needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run the test as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	topo, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("build test topology: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			topo.logProcesses(t)
		}
		if err := topo.Close(); err != nil {
			t.Errorf("remove test topology: %v", err)
		}
	})
	return topo
}

// New builds a topology: the fabric, opts.Nodes nodes and opts.PodsPerNode
// pods on each. It first removes leftovers of dead processes (see the
// package doc). On error everything created so far is removed.
func New(ctx context.Context, opts Options) (*Topology, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("testtopo needs %s (iproute2 / util-linux) in PATH: %w", bin, err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := RemoveStale(ctx, log); err != nil {
		return nil, err
	}
	base := fmt.Sprintf("%s%d-%d-", NamePrefix, os.Getpid(), topoSeq.Add(1))
	t := &Topology{
		opts:    opts,
		log:     log.With("component", "testtopo"),
		base:    base,
		fabric:  nsName(base, 0, 0),
		handles: map[string]*socket.Netns{},
	}
	t.FabricNetnsPath = netnsPath(t.fabric)
	if err := t.build(ctx); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	return t, nil
}

func netnsPath(name string) string { return "/run/netns/" + name }

func (t *Topology) build(ctx context.Context) error {
	if err := t.addNetns(ctx, t.fabric, false); err != nil {
		return err
	}
	if err := t.ipBatch(ctx, t.fabric,
		"link add br0 type bridge",
		"link set br0 up",
	); err != nil {
		return err
	}
	for n := 1; n <= t.opts.Nodes; n++ {
		if err := t.addNode(ctx, n); err != nil {
			return err
		}
	}
	for _, node := range t.Nodes {
		var cmds []string
		for _, other := range t.Nodes {
			if other == node {
				continue
			}
			cmds = append(cmds, fmt.Sprintf("route add %s via %s dev eth0", other.PodCIDR, other.IP))
			if t.opts.IPv6 {
				cmds = append(cmds, fmt.Sprintf("route add %s via %s dev eth0", other.PodCIDRv6, other.IPv6))
			}
		}
		if err := t.ipBatch(ctx, node.NetnsName, cmds...); err != nil {
			return err
		}
	}
	for _, node := range t.Nodes {
		for range t.opts.PodsPerNode {
			if _, err := t.AddPod(ctx, node); err != nil {
				return err
			}
		}
	}
	t.log.Info("topology ready", "prefix", t.base, "nodes", len(t.Nodes), "podsPerNode", t.opts.PodsPerNode)
	return nil
}

func (t *Topology) addNode(ctx context.Context, n int) error {
	node := &Node{
		Name:      fmt.Sprintf("node%d", n),
		Index:     n,
		IP:        nodeAddr(n, false),
		PodCIDR:   podCIDR(n, false),
		NetnsName: nsName(t.base, n, 0),
	}
	node.NetnsPath = netnsPath(node.NetnsName)
	if t.opts.IPv6 {
		node.IPv6 = nodeAddr(n, true)
		node.PodCIDRv6 = podCIDR(n, true)
	}
	if err := t.addNetns(ctx, node.NetnsName, true); err != nil {
		return err
	}
	fabricVeth := fmt.Sprintf("n%d", n)
	if err := t.ipBatch(ctx, t.fabric,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", fabricVeth, node.NetnsName),
		fmt.Sprintf("link set %s master br0", fabricVeth),
		fmt.Sprintf("link set %s up", fabricVeth),
	); err != nil {
		return err
	}
	cmds := []string{fmt.Sprintf("addr add %s/24 dev eth0", node.IP)}
	if t.opts.IPv6 {
		cmds = append(cmds, fmt.Sprintf("addr add %s/64 dev eth0 nodad", node.IPv6))
	}
	cmds = append(cmds, "link set eth0 up")
	if err := t.ipBatch(ctx, node.NetnsName, cmds...); err != nil {
		return err
	}
	t.mu.Lock()
	t.Nodes = append(t.Nodes, node)
	t.mu.Unlock()
	return nil
}

// AddPod creates one more pod on node and returns it. Its address is the
// next free one of the node's range.
func (t *Topology) AddPod(ctx context.Context, node *Node) (*Pod, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errors.New("add pod: topology is closed")
	}
	k := len(node.Pods) + 1
	if k > MaxPodsPerNode {
		t.mu.Unlock()
		return nil, fmt.Errorf("add pod to %s: the node already has %d pods, the most its /24 holds", node.Name, MaxPodsPerNode)
	}
	pod := &Pod{
		Name:      fmt.Sprintf("%s-pod%d", node.Name, k),
		Index:     k,
		Node:      node,
		IP:        podAddr(node.Index, k, false),
		NetnsName: nsName(t.base, node.Index, k),
		HostVeth:  fmt.Sprintf("p%d", k),
	}
	if t.opts.IPv6 {
		pod.IPv6 = podAddr(node.Index, k, true)
	}
	pod.NetnsPath = netnsPath(pod.NetnsName)
	node.Pods = append(node.Pods, pod) // reserve the index
	t.mu.Unlock()

	if err := t.addNetns(ctx, pod.NetnsName, false); err != nil {
		return nil, err
	}
	nodeCmds := []string{
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", pod.HostVeth, pod.NetnsName),
		fmt.Sprintf("addr add %s/32 dev %s", GatewayV4, pod.HostVeth),
	}
	if t.opts.IPv6 {
		nodeCmds = append(nodeCmds, fmt.Sprintf("addr add %s/64 dev %s nodad", GatewayV6, pod.HostVeth))
	}
	nodeCmds = append(nodeCmds,
		fmt.Sprintf("link set %s up", pod.HostVeth),
		fmt.Sprintf("route add %s/32 dev %s", pod.IP, pod.HostVeth),
	)
	if t.opts.IPv6 {
		nodeCmds = append(nodeCmds, fmt.Sprintf("route add %s/128 dev %s", pod.IPv6, pod.HostVeth))
	}
	if err := t.ipBatch(ctx, node.NetnsName, nodeCmds...); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", pod.Name, err)
	}
	podCmds := []string{fmt.Sprintf("addr add %s/32 dev eth0", pod.IP)}
	if t.opts.IPv6 {
		podCmds = append(podCmds, fmt.Sprintf("addr add %s/128 dev eth0 nodad", pod.IPv6))
	}
	podCmds = append(podCmds,
		"link set eth0 up",
		fmt.Sprintf("route add %s dev eth0 scope link", GatewayV4),
		fmt.Sprintf("route add default via %s dev eth0", GatewayV4),
	)
	if t.opts.IPv6 {
		podCmds = append(podCmds, fmt.Sprintf("route add ::/0 via %s dev eth0", GatewayV6))
	}
	if err := t.ipBatch(ctx, pod.NetnsName, podCmds...); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", pod.Name, err)
	}
	t.log.Debug("pod added", "pod", pod.Name, "ip", pod.IP, "netns", pod.NetnsPath)
	return pod, nil
}

// Pods returns every pod, node by node.
func (t *Topology) Pods() []*Pod {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Pod
	for _, n := range t.Nodes {
		out = append(out, n.Pods...)
	}
	return out
}

// addNetns creates a named netns with lo up and the sysctls of its role
// (router: IPv4/IPv6 forwarding), and remembers it for Close.
func (t *Topology) addNetns(ctx context.Context, name string, router bool) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errors.New("topology is closed")
	}
	t.created = append(t.created, name) // Close deletes it even if add half-failed
	t.mu.Unlock()
	if err := runIP(ctx, "netns", "add", name); err != nil {
		return err
	}
	sysctls := map[string]string{
		// No duplicate address detection: addresses are usable at once.
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv6/conf/default/accept_dad": "0",
		// Pod addresses are /32s on point-to-point veths; loose source
		// checks keep asymmetric test setups (transparent sources) working.
		"net/ipv4/conf/all/rp_filter":     "0",
		"net/ipv4/conf/default/rp_filter": "0",
	}
	if router {
		sysctls["net/ipv4/ip_forward"] = "1"
		sysctls["net/ipv6/conf/all/forwarding"] = "1"
	}
	err := t.Do(netnsPath(name), func() error {
		for _, k := range slices.Sorted(mapKeys(sysctls)) {
			if err := os.WriteFile("/proc/sys/"+k, []byte(sysctls[k]), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(k, "/", "."), sysctls[k], err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("configure netns %s: %w", name, err)
	}
	return t.ipBatch(ctx, name, "link set lo up")
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ipBatch runs `ip -n ns -batch -` with cmds, one per line. Batch lines
// take no options (no -6): the family follows from the addresses.
func (t *Topology) ipBatch(ctx context.Context, ns string, cmds ...string) error {
	if len(cmds) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s\ncommands:\n  %s", ns, err, bytes.TrimSpace(out), strings.Join(cmds, "\n  "))
	}
	return nil
}

func runIP(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, ipTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Close stops every process started with Start (SIGTERM to its process
// group, SIGKILL after 5 s), closes listeners made by Listen, and deletes
// every namespace, pods first. It is idempotent.
func (t *Topology) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	procs, listeners, created, handles := t.procs, t.listeners, t.created, t.handles
	t.procs, t.listeners, t.created, t.handles = nil, nil, nil, map[string]*socket.Netns{}
	t.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { _ = p.Stop(5 * time.Second) })
	}
	wg.Wait()
	for _, l := range listeners {
		_ = l.Close()
	}
	for _, h := range handles {
		_ = h.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Pods were created after their node, nodes after the fabric: delete
	// in reverse order.
	for _, name := range slices.Backward(created) {
		if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := deleteNetns(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	t.log.Info("topology removed", "prefix", t.base, "namespaces", len(created))
	return errors.Join(errs...)
}

// deleteNetns kills whatever still runs inside the namespace, then
// deletes it.
func deleteNetns(ctx context.Context, name string) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output(); err == nil {
		for f := range strings.FieldsSeq(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return runIP(ctx, "netns", "del", name)
}

// RemoveStale deletes the network namespaces named NamePrefix+"<pid>-..."
// whose pid no longer runs (left by a test binary or bench killed before
// its cleanup), killing the processes still inside them first. New calls
// it; namespaces of live processes are left alone.
func RemoveStale(ctx context.Context, log *slog.Logger) error {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list /run/netns to find stale test namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPID(e.Name())
		if !ok || pid == os.Getpid() || processExists(pid) {
			continue
		}
		if log != nil {
			log.Info("removing stale test netns", "netns", e.Name(), "deadPid", pid)
		}
		if err := deleteNetns(ctx, e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("remove stale netns: %w", err))
		}
	}
	return errors.Join(errs...)
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
