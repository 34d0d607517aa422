package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/state"
	"ambit.dev/ztunnel/internal/testtopo"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// The ztunnel binary is built once per test binary.
var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func ztunnelBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ambit-ztunnel-it-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "ztunnel")
		out, err := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", buildBin, "ambit.dev/ztunnel/cmd/ztunnel").CombinedOutput() // -tags: the Makefile's GOTAGS
		if err != nil {
			buildErr = fmt.Errorf("go build ztunnel: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this privileged test needs root (network namespaces, iptables in pod namespaces); run it as root")
	}
}

// podSpec says how a topology pod appears in the workloads file.
type podSpec struct {
	name, namespace, sa string
	mesh                bool
	strict              bool
	// policies are the keys of the WORKLOAD_SELECTOR policies selecting
	// the pod.
	policies []string
	// services maps a service key (namespace/hostname) to the port map
	// through which the pod backs it (may be empty).
	services map[string]map[string]uint32
}

// mesh is a topology with a ztunnel per node.
type mesh struct {
	t      *testing.T
	topo   *testtopo.Topology
	dir    string
	caCert string
	caKey  string
	ca     *identity.LocalCA
	specs  map[*testtopo.Pod]podSpec
	svcs   []state.FileService
	// policies go into every workloads file.
	policies []state.FilePolicy
	zt       map[*testtopo.Node]*ztunnel
	// released pods get no netns in the workloads file (not captured).
	released map[*testtopo.Pod]bool
}

// ztunnel is one ztunnel process and its ports (inside its node netns).
type ztunnel struct {
	node                *testtopo.Node
	proc                *testtopo.Process
	admin, metrics, rdy int
}

const trustDomain = "cluster.local"

// newMesh builds a dual-stack topology with nodes×pods pods, describes them per
// specs (pods without a spec are left out of the state), installs the
// redirection rules in the mesh pods and writes the CA pair.
func newMesh(t *testing.T, nodes, podsPerNode int, specs func(p *testtopo.Pod) (podSpec, bool)) *mesh {
	t.Helper()
	requireRoot(t)
	ztunnelBinary(t)
	topo := testtopo.Setup(t, testtopo.Options{Nodes: nodes, PodsPerNode: podsPerNode, IPv6: true})
	m := &mesh{t: t, topo: topo, dir: t.TempDir(), specs: map[*testtopo.Pod]podSpec{}, zt: map[*testtopo.Node]*ztunnel{}, released: map[*testtopo.Pod]bool{}}
	certPEM, keyPEM, err := identity.GenerateRoot(trustDomain, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m.caCert, m.caKey = filepath.Join(m.dir, "ca-cert.pem"), filepath.Join(m.dir, "ca-key.pem")
	writeFile(t, m.caCert, certPEM)
	writeFile(t, m.caKey, keyPEM)
	if m.ca, err = identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: trustDomain, SigningCertPEM: certPEM, SigningKeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range topo.Pods() {
		s, ok := specs(p)
		if !ok {
			continue
		}
		m.specs[p] = s
		if s.mesh {
			if err := topo.InstallRedirect(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	return m
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (m *mesh) identity(p *testtopo.Pod) identity.ID {
	s := m.specs[p]
	return identity.ID{TrustDomain: trustDomain, Namespace: s.namespace, ServiceAccount: s.sa}
}

// workloadsFile writes the workloads file ztunnel on node reads: every
// pod with a spec, with netns paths for the mesh pods of node.
func (m *mesh) workloadsFile(node *testtopo.Node) string {
	var f state.File
	for _, p := range m.topo.Pods() {
		s, ok := m.specs[p]
		if !ok {
			continue
		}
		w := state.FileWorkload{
			UID: p.Name, Name: s.name, Namespace: s.namespace, ServiceAccount: s.sa,
			Node: p.Node.Name, Protocol: "NONE", MTLSMode: "PERMISSIVE",
		}
		for _, a := range p.Addrs() {
			w.Addresses = append(w.Addresses, a.String())
		}
		if s.mesh {
			w.Protocol = "HBONE"
			if p.Node == node && !m.released[p] {
				w.Netns = p.NetnsPath
			}
		}
		if s.strict {
			w.MTLSMode = "STRICT"
		}
		w.Services = s.services
		w.AuthorizationPolicies = s.policies
		f.Workloads = append(f.Workloads, w)
	}
	f.Services = m.svcs
	f.Policies = m.policies
	data, err := yaml.Marshal(f)
	if err != nil {
		m.t.Fatal(err)
	}
	path := filepath.Join(m.dir, node.Name+"-workloads.yaml")
	writeFile(m.t, path, data)
	return path
}

// startZtunnel runs a ztunnel in node's netns with the given port offset
// (0: 15000/15020/15021) and waits until it is ready.
func (m *mesh) startZtunnel(node *testtopo.Node, portOffset int, drain time.Duration) *ztunnel {
	m.t.Helper()
	z := &ztunnel{node: node, admin: 15000 + portOffset, metrics: 15020 + portOffset, rdy: 15021 + portOffset}
	args := []string{ztunnelBinary(m.t),
		"--node-name=" + node.Name,
		"--workloads-file=" + m.workloadsFile(node),
		"--ca-cert=" + m.caCert, "--ca-key=" + m.caKey,
		fmt.Sprintf("--admin-addr=127.0.0.1:%d", z.admin),
		fmt.Sprintf("--metrics-addr=:%d", z.metrics),
		fmt.Sprintf("--ready-addr=:%d", z.rdy),
		"--drain-period=" + drain.String(),
		"--log-format=text", "--log-level=debug",
	}
	var err error
	if z.proc, err = m.topo.Start(context.Background(), node.NetnsPath, args...); err != nil {
		m.t.Fatal(err)
	}
	m.waitReady(z)
	if m.zt[node] == nil {
		m.zt[node] = z
	}
	return z
}

// waitReady polls /healthz/ready until 200 (bounded; a failing start is
// reported with the process output).
func (m *mesh) waitReady(z *ztunnel) {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if z.proc.Exited() {
			m.t.Fatalf("ztunnel on %s exited: %v\n%s", z.node.Name, z.proc.Err(), z.proc.Output())
		}
		code, body, err := m.get(z.node, fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", z.rdy))
		if err == nil && code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("ztunnel on %s not ready after 30s (last answer: %s)\n%s", z.node.Name, last, z.proc.Output())
}

// get fetches url from inside node's netns.
func (m *mesh) get(node *testtopo.Node, url string) (int, []byte, error) {
	ns, err := m.topo.Netns(node.NetnsPath)
	if err != nil {
		return 0, nil, err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return socket.DialInNetns(ctx, ns, "tcp", addr, socket.DialOptions{})
		},
	}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func (m *mesh) configDump(z *ztunnel) adminapi.ConfigDump {
	m.t.Helper()
	code, body, err := m.get(z.node, fmt.Sprintf("http://127.0.0.1:%d/config_dump", z.admin))
	if err != nil || code != http.StatusOK {
		m.t.Fatalf("GET /config_dump on %s: %d %v %s", z.node.Name, code, err, body)
	}
	var d adminapi.ConfigDump
	if err := json.Unmarshal(body, &d); err != nil {
		m.t.Fatalf("decode /config_dump: %v\n%s", err, body)
	}
	return d
}

func (m *mesh) metricsText(z *ztunnel) string {
	m.t.Helper()
	code, body, err := m.get(z.node, fmt.Sprintf("http://127.0.0.1:%d/metrics", z.metrics))
	if err != nil || code != http.StatusOK {
		m.t.Fatalf("GET /metrics on %s: %d %v", z.node.Name, code, err)
	}
	return string(body)
}

// app is a test application listening inside a pod.
type app struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted []netip.AddrPort
	wg       sync.WaitGroup
}

// startApp listens on port in pod and runs handle for each connection.
func (m *mesh) startApp(pod *testtopo.Pod, port int, handle func(c net.Conn)) *app {
	m.t.Helper()
	ln, err := m.topo.Listen(pod.NetnsPath, "tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		m.t.Fatal(err)
	}
	a := &app{ln: ln}
	a.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			a.mu.Lock()
			a.accepted = append(a.accepted, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			a.mu.Unlock()
			a.wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	m.t.Cleanup(func() {
		ln.Close()
		a.wg.Wait()
	})
	return a
}

func (a *app) acceptedCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.accepted)
}

// shaApp answers each connection, after the client's half-close, with
// "<client ip> <sha256 hex> <bytes>\n".
func shaApp(c net.Conn) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return
	}
	ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	fmt.Fprintf(c, "%s %s %d\n", ip, hex.EncodeToString(h.Sum(nil)), n)
}

// echoApp copies everything back.
func echoApp(c net.Conn) { io.Copy(c, c) }

// dial connects from inside pod (no mark: the pod's rules capture it).
func (m *mesh) dial(ctx context.Context, pod *testtopo.Pod, dst netip.AddrPort) (*net.TCPConn, error) {
	return m.topo.Dial(ctx, pod.NetnsPath, "tcp", dst.String())
}

// shaResult is what shaApp answered.
type shaResult struct {
	ClientIP netip.Addr
	Sum      string
	N        int64
}

// sendSHA connects from pod to dst, streams size pseudo-random bytes,
// half-closes, and returns shaApp's answer and the sha256 of what was sent.
func (m *mesh) sendSHA(ctx context.Context, pod *testtopo.Pod, dst netip.AddrPort, size int64) (shaResult, string, error) {
	c, err := m.dial(ctx, pod, dst)
	if err != nil {
		return shaResult{}, "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(newPRNG(uint64(size)), size), h)
	if _, err := io.Copy(c, src); err != nil {
		return shaResult{}, "", fmt.Errorf("send: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return shaResult{}, "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return shaResult{}, "", fmt.Errorf("read answer: %w (got %q)", err, line)
	}
	var r shaResult
	var ip string
	if _, err := fmt.Sscanf(line, "%s %s %d", &ip, &r.Sum, &r.N); err != nil {
		return shaResult{}, "", fmt.Errorf("answer %q: %w", line, err)
	}
	if r.ClientIP, err = netip.ParseAddr(ip); err != nil {
		return shaResult{}, "", err
	}
	return r, hex.EncodeToString(h.Sum(nil)), nil
}

// prng is a fast deterministic byte stream (xorshift64*), so 100 MiB of
// test data costs no crypto/rand time.
type prng struct{ s uint64 }

func newPRNG(seed uint64) *prng { return &prng{s: seed*0x9E3779B97F4A7C15 | 1} }

func (p *prng) Read(b []byte) (int, error) {
	for i := 0; i+8 <= len(b); i += 8 {
		p.s ^= p.s >> 12
		p.s ^= p.s << 25
		p.s ^= p.s >> 27
		v := p.s * 2685821657736338717
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	n := len(b) &^ 7
	if n == 0 && len(b) > 0 {
		b[0] = byte(p.s)
		n = 1
	}
	return n, nil
}

// expectRefused checks that a connection from pod to dst is refused: the
// connect itself fails, or the first read ends (reset or EOF) without the
// app having answered.
func (m *mesh) expectRefused(ctx context.Context, pod *testtopo.Pod, dst netip.AddrPort) error {
	c, err := m.dial(ctx, pod, dst)
	if err != nil {
		return nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	c.CloseWrite()
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("connection to %s neither answered nor closed within 10s", dst)
	}
	if n > 0 {
		return fmt.Errorf("connection to %s was answered: %q", dst, buf[:n])
	}
	return nil
}

func contains(haystack, needle string) bool { return strings.Contains(haystack, needle) }

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
