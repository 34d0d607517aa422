package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster drives one local cluster.
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	state *State
	pki   *pki
}

// New validates the config; it touches nothing.
func New(cfg Config, log *slog.Logger) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Cluster{cfg: cfg, log: log.With("component", "localcluster")}, nil
}

// node mount points: standard path inside the node -> directory under the
// node's state dir.
var nodeMounts = []struct{ target, dir string }{
	{"/etc/cni/net.d", "etc-cni-net.d"},
	{"/opt/cni/bin", "opt-cni-bin"},
	{"/etc/containerd", "etc-containerd"},
	{"/var/lib/kubelet", "var-lib-kubelet"},
	{"/var/lib/containerd", "var-lib-containerd"},
	{"/var/lib/cni", "var-lib-cni"},
	{"/var/log/pods", "var-log-pods"},
	{"/var/log/containers", "var-log-containers"},
	{"/run/containerd", "run-containerd"},
	{"/run/netns", "run-netns"},
	{"/run/ambit", "run-ambit"},
	{"/var/lib/ambit", "var-lib-ambit"},
}

// requiredTools are the host commands Up runs; the error names the package.
var requiredTools = map[string]string{
	"etcd":       "etcd-server",
	"containerd": "containerd",
	"runc":       "runc",
	"ctr":        "containerd",
	"nsenter":    "util-linux",
	"unshare":    "util-linux",
	"ip":         "iproute2",
	"iptables":   "iptables",
	"conntrack":  "conntrack",
}

func (c *Cluster) preflight() error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("ambit-localcluster must run as root (it creates namespaces, cgroups and routes)"))
	}
	for tool, pkg := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s not found: apt-get install %s (or run `make deps`)", tool, pkg))
		}
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(c.cfg.K8sBinDir, b)); err != nil {
			errs = append(errs, fmt.Errorf("%s missing in %s: run e2e/hack/build-k8s.sh (or `make k8s`)", b, c.cfg.K8sBinDir))
		}
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(c.cfg.CNIPluginDir, p)); err != nil {
			errs = append(errs, fmt.Errorf("CNI plugin %s missing in %s: apt-get install containernetworking-plugins", p, c.cfg.CNIPluginDir))
		}
	}
	if _, err := os.Stat(c.cfg.PauseBinary); err != nil {
		errs = append(errs, fmt.Errorf("pause binary %s missing: build it with `make build`", c.cfg.PauseBinary))
	}
	return errors.Join(errs...)
}

// Up brings the cluster up. If a healthy cluster of the same name is already
// up it only imports the configured images; a broken one is taken down first.
func (c *Cluster) Up(ctx context.Context) error {
	if err := c.preflight(); err != nil {
		return err
	}
	if st, err := LoadState(c.cfg.StateDir); err == nil {
		c.state = st
		if c.healthy(ctx) == nil {
			c.log.Info("cluster already up; importing images only", "name", c.cfg.Name)
			return c.LoadImages(ctx, c.cfg.Images...)
		}
		c.log.Warn("recorded cluster is not healthy; taking it down first")
		if err := c.Down(ctx); err != nil {
			return fmt.Errorf("clean up the previous cluster: %w", err)
		}
	}
	start := time.Now()
	c.state = newState(c.cfg)
	if err := c.state.save(); err != nil {
		return fmt.Errorf("write state in %s: %w", c.cfg.StateDir, err)
	}
	var err error
	if c.pki, err = ensurePKI(c.cfg); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := c.pki.writeKubeconfig(c.cfg.KubeconfigPath(), "admin"); err != nil {
		return err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"host network", c.upHostNetwork},
		{"control plane", c.upControlPlane},
		{"nodes", c.upNodes},
		{"pod network", c.upPodNetwork},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w (logs in %s; `ambit-localcluster down` removes what was created)", s.name, err, c.cfg.logDir())
		}
		c.log.Info("ready", "step", s.name, "took", time.Since(t).Round(time.Millisecond))
	}
	c.log.Info("cluster up", "name", c.cfg.Name, "nodes", c.cfg.Nodes, "took", time.Since(start).Round(time.Millisecond), "kubeconfig", c.cfg.KubeconfigPath())
	return nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (c *Cluster) upHostNetwork(ctx context.Context) error {
	// Refuse to shadow an existing route for the node network.
	if out, _ := c.run(ctx, "ip", "-4", "route", "show", NodeNet.String()); strings.TrimSpace(out) != "" {
		return fmt.Errorf("%s is already routed on this host (%s): is another local cluster up? try `ambit-localcluster down`", NodeNet, strings.TrimSpace(out))
	}
	br := c.cfg.bridgeName()
	if err := c.state.addLink(br); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", "name", br, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", HostIP, NodeNet.Bits()), "dev", br},
		{"link", "set", br, "up"},
	} {
		if _, err := c.run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	// Guard the cluster ranges: whatever is not routed to a node is
	// unreachable instead of going to the default gateway.
	for _, p := range []string{PodCIDR.String(), ServiceCIDR.String()} {
		r := []string{"unreachable", p}
		if err := c.state.addRoute(r); err != nil {
			return err
		}
		if _, err := c.run(ctx, "ip", append([]string{"route", "add"}, r...)...); err != nil {
			return err
		}
	}
	// Bridged node-to-node traffic crosses the host's FORWARD chain (bridge
	// netfilter). Only if its policy is not ACCEPT add one rule, narrowed to
	// this bridge.
	if out, err := c.run(ctx, "iptables", "-S", "FORWARD"); err == nil && !strings.Contains(out, "-P FORWARD ACCEPT") {
		rule := IPTRule{Table: "filter", Chain: "FORWARD", Spec: []string{"-i", br, "-o", br, "-j", "ACCEPT"}}
		if err := c.state.record(func(s *State) { s.IPTables = append(s.IPTables, rule) }); err != nil {
			return err
		}
		if _, err := c.run(ctx, "iptables", append([]string{"-t", rule.Table, "-I", rule.Chain}, rule.Spec...)...); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) upControlPlane(ctx context.Context) error {
	if err := c.ensureCgroup(c.cfg.hostCgroup()); err != nil {
		return err
	}
	etcdDir := filepath.Join(c.cfg.StateDir, "etcd")
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", EtcdClientPort)
	if err := c.launch("etcd", c.cfg.hostCgroup(), nil, "etcd",
		"--name", "ambit", "--data-dir", etcdDir,
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", EtcdPeerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", EtcdPeerPort),
		"--initial-cluster", fmt.Sprintf("ambit=http://127.0.0.1:%d", EtcdPeerPort),
		"--listen-metrics-urls", "http://127.0.0.1:2381",
	); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "etcd /health on "+etcdURL, func() error {
		return httpOK(etcdURL + "/health")
	}); err != nil {
		return err
	}
	p := c.pki.path
	bin := func(b string) string { return filepath.Join(c.cfg.K8sBinDir, b) }
	if err := c.launch("kube-apiserver", c.cfg.hostCgroup(), nil, bin("kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", HostIP.String(),
		"--advertise-address", HostIP.String(),
		"--secure-port", strconv.Itoa(APIServerPort),
		"--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"),
		"--client-ca-file", p("ca.crt"),
		"--token-auth-file", p("tokens.csv"),
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--service-cluster-ip-range", ServiceCIDR.String(),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p("sa.pub"),
		"--service-account-signing-key-file", p("sa.key"),
		"--api-audiences", "https://kubernetes.default.svc.cluster.local",
		"--kubelet-client-certificate", p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", p("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "kube-apiserver /readyz", c.apiReady); err != nil {
		return err
	}
	for _, n := range []string{"kube-controller-manager", "kube-scheduler"} {
		if err := c.pki.writeKubeconfig(filepath.Join(c.cfg.StateDir, n+".kubeconfig"), n); err != nil {
			return err
		}
	}
	if err := c.launch("kube-controller-manager", c.cfg.hostCgroup(), nil, bin("kube-controller-manager"),
		"--kubeconfig", filepath.Join(c.cfg.StateDir, "kube-controller-manager.kubeconfig"),
		"--authentication-kubeconfig", filepath.Join(c.cfg.StateDir, "kube-controller-manager.kubeconfig"),
		"--authorization-kubeconfig", filepath.Join(c.cfg.StateDir, "kube-controller-manager.kubeconfig"),
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
		"--use-service-account-credentials",
		"--service-account-private-key-file", p("sa.key"),
		"--root-ca-file", p("ca.crt"),
		"--cluster-signing-cert-file", p("ca.crt"),
		"--cluster-signing-key-file", p("ca.key"),
		"--allocate-node-cidrs", "--cluster-cidr", PodCIDR.String(), "--node-cidr-mask-size", "24",
		"--service-cluster-ip-range", ServiceCIDR.String(),
		"--v=1",
	); err != nil {
		return err
	}
	return c.launch("kube-scheduler", c.cfg.hostCgroup(), nil, bin("kube-scheduler"),
		"--kubeconfig", filepath.Join(c.cfg.StateDir, "kube-scheduler.kubeconfig"),
		"--authentication-kubeconfig", filepath.Join(c.cfg.StateDir, "kube-scheduler.kubeconfig"),
		"--authorization-kubeconfig", filepath.Join(c.cfg.StateDir, "kube-scheduler.kubeconfig"),
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
		"--v=1",
	)
}

func (c *Cluster) apiReady() error {
	req, _ := http.NewRequest(http.MethodGet, APIServerURL()+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+c.pki.tokens["admin"])
	resp, err := insecureClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// holderPID is the PID of node i's namespace holder (the process that owns
// the node's network and mount namespaces).
func (c *Cluster) holderPID(i int) (int, error) {
	for _, p := range c.state.Processes {
		if p.Name == NodeName(i)+"-ns" && alive(p) {
			return p.PID, nil
		}
	}
	return 0, fmt.Errorf("%s's namespace holder is not running (check %s)", NodeName(i), c.cfg.logDir())
}

// nodeExec runs a command inside node i's network and mount namespaces.
func (c *Cluster) nodeExec(ctx context.Context, i int, name string, args ...string) (string, error) {
	pid, err := c.holderPID(i)
	if err != nil {
		return "", err
	}
	return c.run(ctx, "nsenter", append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--mount=/proc/" + strconv.Itoa(pid) + "/ns/mnt", "--", name}, args...)...)
}

func (c *Cluster) upNodes(ctx context.Context) error {
	for i := 1; i <= c.cfg.Nodes; i++ {
		if err := c.upNode(ctx, i); err != nil {
			return fmt.Errorf("%s: %w", NodeName(i), err)
		}
	}
	return nil
}

func (c *Cluster) upNode(ctx context.Context, i int) error {
	name, dir := NodeName(i), c.cfg.nodeDir(i)
	cg := c.cfg.nodeCgroup(i)
	if err := c.ensureCgroup(cg + "/system"); err != nil {
		return err
	}
	// Node directories and config files.
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, m := range nodeMounts {
		src := filepath.Join(dir, m.dir)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := c.ensureHostDir(m.target); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %q %q\n", src, m.target)
	}
	// Mounts made inside the node (kubelet volumes, container rootfs)
	// propagate to the node's containers but never back to the host.
	script.WriteString("mount --make-rshared /\n")
	ready := filepath.Join(dir, "ns-ready")
	_ = os.Remove(ready)
	fmt.Fprintf(&script, "touch %q\nexec sleep infinity\n", ready)

	entries, err := os.ReadDir(c.cfg.CNIPluginDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := copyFile(filepath.Join(c.cfg.CNIPluginDir, e.Name()), filepath.Join(dir, "opt-cni-bin", e.Name()), 0o755); err != nil {
			return err
		}
	}
	containerdCfg, err := render(containerdTmpl, map[string]any{"PauseImage": PauseImage})
	if err != nil {
		return err
	}
	kubeletCfg, err := render(kubeletTmpl, map[string]any{
		"NodeIP": NodeIP(i), "CgroupRoot": cg, "CAFile": c.pki.path("ca.crt"),
		"ResolvConf": filepath.Join(dir, "resolv.conf"),
	})
	if err != nil {
		return err
	}
	proxyKubeconfig := filepath.Join(dir, "kube-proxy.kubeconfig")
	proxyCfg, err := render(kubeProxyTmpl, map[string]any{"Kubeconfig": proxyKubeconfig, "NodeName": name, "PodCIDR": PodCIDR})
	if err != nil {
		return err
	}
	for path, data := range map[string][]byte{
		filepath.Join(dir, "etc-containerd", "config.toml"): containerdCfg,
		filepath.Join(dir, "kubelet.yaml"):                  kubeletCfg,
		filepath.Join(dir, "kube-proxy.yaml"):               proxyCfg,
		// Pods get no upstream resolver: the cluster has no route out.
		filepath.Join(dir, "resolv.conf"): []byte("# ambit-localcluster: no upstream DNS\noptions ndots:1\n"),
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	if err := c.pki.writeKubeconfig(filepath.Join(dir, "kubelet.kubeconfig"), name); err != nil {
		return err
	}
	if err := c.pki.writeKubeconfig(proxyKubeconfig, "kube-proxy"); err != nil {
		return err
	}

	// The holder owns the node's network and mount namespaces.
	if err := c.launch(name+"-ns", cg+"/system", nil, "unshare", "--net", "--mount", "--propagation", "slave", "--", "/bin/sh", "-c", script.String()); err != nil {
		return err
	}
	if err := waitFor(ctx, 10*time.Second, name+" namespaces", func() error {
		_, err := os.Stat(ready)
		return err
	}); err != nil {
		return err
	}
	pid, err := c.holderPID(i)
	if err != nil {
		return err
	}
	// Network: a veth from the host bridge into the node.
	veth := c.cfg.vethHost(i)
	if err := c.state.addLink(veth); err != nil {
		return err
	}
	if _, err := c.run(ctx, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(pid)); err != nil {
		return err
	}
	if _, err := c.run(ctx, "ip", "link", "set", veth, "master", c.cfg.bridgeName(), "up"); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", NodeIP(i), NodeNet.Bits()), "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		// Locally originated traffic to a ClusterIP needs a route before
		// kube-proxy's DNAT rewrites it.
		{"ip", "route", "add", ServiceCIDR.String(), "via", HostIP.String()},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"},
	} {
		if _, err := c.nodeExec(ctx, i, args[0], args[1:]...); err != nil {
			return err
		}
	}
	ns := []string{"nsenter", "--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--mount=/proc/" + strconv.Itoa(pid) + "/ns/mnt", "--"}
	if err := c.launch(name+"-containerd", cg+"/system", ns, "containerd", "--config", "/etc/containerd/config.toml"); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, name+" containerd socket", func() error {
		_, err := c.nodeExec(ctx, i, "ctr", "--address", "/run/containerd/containerd.sock", "version")
		return err
	}); err != nil {
		return err
	}
	if err := c.importImages(ctx, i, c.cfg.Images...); err != nil {
		return err
	}
	if err := c.launch(name+"-kubelet", cg+"/system", ns, filepath.Join(c.cfg.K8sBinDir, "kubelet"),
		"--config", filepath.Join(dir, "kubelet.yaml"),
		"--kubeconfig", filepath.Join(dir, "kubelet.kubeconfig"),
		"--hostname-override", name,
		"--node-ip", NodeIP(i).String(),
		"--v=1",
	); err != nil {
		return err
	}
	return c.launch(name+"-kube-proxy", cg+"/system", ns, filepath.Join(c.cfg.K8sBinDir, "kube-proxy"),
		"--config", filepath.Join(dir, "kube-proxy.yaml"), "--v=1")
}

// ensureHostDir creates a mount target on the host if missing and records
// it so Down removes it again (only while empty).
func (c *Cluster) ensureHostDir(path string) error {
	var missing []string
	for p := path; p != "/"; p = filepath.Dir(p) {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := c.state.record(func(s *State) { s.HostDirs = append(s.HostDirs, missing...) }); err != nil {
		return err
	}
	return os.MkdirAll(path, 0o755)
}

// upPodNetwork waits for every node's pod CIDR, writes the node's CNI
// config, routes the CIDR to the node, and waits for all nodes Ready.
func (c *Cluster) upPodNetwork(ctx context.Context) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	cidrs := map[int]string{}
	if err := waitFor(ctx, 90*time.Second, "nodes registered with a pod CIDR", func() error {
		for i := 1; i <= c.cfg.Nodes; i++ {
			if _, ok := cidrs[i]; ok {
				continue
			}
			n, err := cs.CoreV1().Nodes().Get(ctx, NodeName(i), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if n.Spec.PodCIDR == "" {
				return fmt.Errorf("%s has no podCIDR yet", n.Name)
			}
			cidrs[i] = n.Spec.PodCIDR
		}
		return nil
	}); err != nil {
		return err
	}
	for i, cidr := range cidrs {
		conf, err := render(cniTmpl, map[string]any{"PodCIDR": cidr})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.cfg.nodeDir(i), "etc-cni-net.d", "10-ambit-localcluster.conflist"), conf, 0o644); err != nil {
			return err
		}
		r := []string{cidr, "via", NodeIP(i).String()}
		if err := c.state.addRoute(r); err != nil {
			return err
		}
		if _, err := c.run(ctx, "ip", append([]string{"route", "replace"}, r...)...); err != nil {
			return err
		}
		for j := 1; j <= c.cfg.Nodes; j++ {
			if j != i {
				if _, err := c.nodeExec(ctx, j, "ip", "route", "replace", cidr, "via", NodeIP(i).String()); err != nil {
					return err
				}
			}
		}
	}
	if err := waitFor(ctx, 120*time.Second, "all nodes Ready", func() error {
		return c.nodesReady(ctx, cs)
	}); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) nodesReady(ctx context.Context, cs kubernetes.Interface) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := 0
	var notReady []string
	for _, n := range nodes.Items {
		ok := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if ok {
			ready++
		} else {
			notReady = append(notReady, n.Name)
		}
	}
	if ready < c.cfg.Nodes {
		return fmt.Errorf("%d/%d nodes Ready (not ready: %v)", ready, c.cfg.Nodes, notReady)
	}
	return nil
}

// Clientset returns an admin client for the cluster.
func (c *Cluster) Clientset() (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.KubeconfigPath())
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", c.cfg.KubeconfigPath(), err)
	}
	return kubernetes.NewForConfig(rc)
}

// LoadImages imports docker-archive tarballs into every node's containerd.
func (c *Cluster) LoadImages(ctx context.Context, tarballs ...string) error {
	if c.state == nil {
		st, err := LoadState(c.cfg.StateDir)
		if err != nil {
			return fmt.Errorf("no cluster recorded in %s (run `ambit-localcluster up`): %w", c.cfg.StateDir, err)
		}
		c.state = st
	}
	for i := 1; i <= c.state.Nodes; i++ {
		if err := c.importImages(ctx, i, tarballs...); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) importImages(ctx context.Context, i int, tarballs ...string) error {
	for _, t := range tarballs {
		abs, err := filepath.Abs(t)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("image tarball: %w", err)
		}
		if _, err := c.nodeExec(ctx, i, "ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import", "--no-unpack=false", abs); err != nil {
			return fmt.Errorf("import %s into %s: %w", t, NodeName(i), err)
		}
		c.log.Info("image imported", "node", NodeName(i), "tarball", filepath.Base(t))
	}
	return nil
}

// healthy reports nil when every recorded process runs and the API answers.
func (c *Cluster) healthy(ctx context.Context) error {
	for _, p := range c.state.Processes {
		if !alive(p) {
			return fmt.Errorf("%s (pid %d) is not running; see %s", p.Name, p.PID, p.Log)
		}
	}
	if c.pki == nil {
		var err error
		if c.pki, err = ensurePKI(c.cfg); err != nil {
			return err
		}
	}
	if err := c.apiReady(); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	return c.nodesReady(ctx, cs)
}

// Status describes the recorded cluster; the error says what is wrong.
func (c *Cluster) Status(ctx context.Context) (string, error) {
	st, err := LoadState(c.cfg.StateDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("no cluster %q recorded in %s", c.cfg.Name, c.cfg.StateDir)
		}
		return "", err
	}
	c.state = st
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %s: %d nodes, started %s\n", st.Name, st.Nodes, st.StartedAt.Format(time.RFC3339))
	for _, p := range st.Processes {
		state := "running"
		if !alive(p) {
			state = "DEAD"
		}
		fmt.Fprintf(&b, "  %-24s pid %-7d %s\n", p.Name, p.PID, state)
	}
	fmt.Fprintf(&b, "kubeconfig: %s\n", c.cfg.KubeconfigPath())
	return b.String(), c.healthy(ctx)
}
