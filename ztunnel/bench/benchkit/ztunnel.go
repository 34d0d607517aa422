package benchkit

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"ambit.dev/pkg/identity"
)

// Namespace is the Kubernetes namespace of every workload of a bench.
const Namespace = "bench"

// Workload is one entry of a ztunnel workloads file.
type Workload struct {
	UID, Name, ServiceAccount, Node string
	IP                              netip.Addr
	// Netns is set only in the file of the pod's own node (captured pods).
	Netns string
	// Services maps "namespace/hostname" to service port → target port.
	Services map[string]map[uint16]uint16
}

// Service is one entry of a ztunnel workloads file.
type Service struct {
	Name, Hostname string
	VIPs           []netip.Addr
	Ports          map[uint16]uint16 // service port → target port
	// Waypoint is the waypoint pod's address (invalid: none).
	Waypoint netip.Addr
}

func portsYAML(ports map[uint16]uint16) string {
	var parts []string
	for _, p := range slices.Sorted(mapKeys(ports)) {
		parts = append(parts, fmt.Sprintf("%q: %d", strconv.Itoa(int(p)), ports[p]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// WorkloadsYAML is ztunnel's --workloads-file for ws and svcs (all in
// Namespace).
func WorkloadsYAML(ws []Workload, svcs []Service) string {
	var b strings.Builder
	b.WriteString("# written by an Ambit benchmark\nworkloads:\n")
	for _, w := range ws {
		fmt.Fprintf(&b, "- uid: %s\n  name: %s\n  namespace: %s\n  serviceAccount: %s\n  node: %s\n  addresses: [%q]\n  protocol: HBONE\n  mtlsMode: PERMISSIVE\n",
			w.UID, w.Name, Namespace, w.ServiceAccount, w.Node, w.IP.String())
		if w.Netns != "" {
			fmt.Fprintf(&b, "  netns: %s\n", w.Netns)
		}
		if len(w.Services) > 0 {
			var parts []string
			for _, k := range slices.Sorted(mapKeys(w.Services)) {
				parts = append(parts, fmt.Sprintf("%q: %s", k, portsYAML(w.Services[k])))
			}
			fmt.Fprintf(&b, "  services: {%s}\n", strings.Join(parts, ", "))
		}
	}
	if len(svcs) == 0 {
		b.WriteString("services: []\n")
		return b.String()
	}
	b.WriteString("services:\n")
	for _, s := range svcs {
		var vips []string
		for _, v := range s.VIPs {
			vips = append(vips, strconv.Quote(v.String()))
		}
		fmt.Fprintf(&b, "- name: %s\n  namespace: %s\n  hostname: %s\n  vips: [%s]\n  ports: %s\n",
			s.Name, Namespace, s.Hostname, strings.Join(vips, ", "), portsYAML(s.Ports))
		if s.Waypoint.IsValid() {
			fmt.Fprintf(&b, "  waypoint: {address: %q}\n", s.Waypoint.String())
		}
	}
	return b.String()
}

// WriteCARoot writes a fresh mesh root (cert and key, the ztunnels' local
// CA) into dir once and returns the two paths.
func WriteCARoot(dir string) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, "ztunnel-ca.pem"), filepath.Join(dir, "ztunnel-ca-key.pem")
	if _, err := os.Stat(certPath); err == nil {
		return certPath, keyPath, nil
	}
	certPEM, keyPEM, err := identity.GenerateRoot(identity.DefaultTrustDomain, time.Now(), 48*time.Hour)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, os.WriteFile(keyPath, keyPEM, 0o600)
}

// ZtunnelConfig is how one ztunnel of a bench runs.
type ZtunnelConfig struct {
	Bin, WorkloadsFile, CACert, CAKey, LogLevel string
}

// StartZtunnel runs ztunnel in node's netns (admin 127.0.0.1:15000,
// metrics :15020, readiness :15021) and waits until it is ready.
func StartZtunnel(ctx context.Context, topo *Topology, node *Node, c ZtunnelConfig) (*Process, error) {
	p, err := topo.Start(ctx, node.NetnsPath, c.Bin,
		"--node-name", node.Name,
		"--workloads-file", c.WorkloadsFile,
		"--ca-cert", c.CACert, "--ca-key", c.CAKey,
		"--trust-domain", identity.DefaultTrustDomain,
		"--admin-addr", "127.0.0.1:15000",
		"--metrics-addr", ":15020", "--ready-addr", ":15021",
		"--drain-period", "2s",
		"--log-level", c.LogLevel, "--log-format", "text",
	)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, topo, node, p); err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// Tail returns the last 4000 bytes of a process's output, for errors.
func Tail(p *Process) string {
	out := p.Output()
	if len(out) > 4000 {
		out = "..." + out[len(out)-4000:]
	}
	return fmt.Sprintf("(pid %d, exited %v %v):\n%s", p.Pid(), p.Exited(), p.Err(), out)
}

// NodeGet fetches http://127.0.0.1:<port><path> inside a netns, within
// ctx's deadline or, when it has none, 5 s.
func NodeGet(ctx context.Context, topo *Topology, netnsPath string, port int, path string) (int, string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return topo.Dial(ctx, netnsPath, "tcp4", addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(body), err
}

// WaitHTTPReady polls http://127.0.0.1:<port>/healthz/ready in a netns
// until 200, for up to 30 s, failing early when p exits.
func WaitHTTPReady(ctx context.Context, topo *Topology, netnsPath string, port int, what string, p *Process) error {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p.Exited() {
			return fmt.Errorf("%s exited %s", what, Tail(p))
		}
		code, body, err := NodeGet(ctx, topo, netnsPath, port, "/healthz/ready")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, strings.TrimSpace(body), err)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within 30s (last answer: %s) %s", what, last, Tail(p))
}

func waitReady(ctx context.Context, topo *Topology, node *Node, p *Process) error {
	return WaitHTTPReady(ctx, topo, node.NetnsPath, 15021, "ztunnel on "+node.Name, p)
}

// MetricSum sums the samples of a Prometheus counter family (every label
// set) at http://127.0.0.1:<port>/metrics in a netns.
func MetricSum(ctx context.Context, topo *Topology, netnsPath string, port int, name string) (float64, error) {
	code, body, err := NodeGet(ctx, topo, netnsPath, port, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics answered %d", code)
	}
	var sum float64
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum, nil
}

// WriteCertBundles writes ca.pem (a fresh local CA's roots) and, for each
// name, <name>.pem: an ECDSA P-256 X.509-SVID chain for
// spiffe://<td>/ns/bench/sa/<name> followed by its PKCS#8 key, the layout
// HAProxy's `crt` and nginx's ssl_certificate(_key) read.
func WriteCertBundles(dir string, names ...string) error {
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.RootsPEM(), 0o600); err != nil {
		return err
	}
	for _, who := range names {
		id, err := identity.New(ca.TrustDomain(), Namespace, who)
		if err != nil {
			return err
		}
		cert, err := ca.Issue(id, 24*time.Hour)
		if err != nil {
			return fmt.Errorf("issue %s certificate: %w", who, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.TLS.PrivateKey)
		if err != nil {
			return err
		}
		pemData := append(cert.ChainPEM(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
		if err := os.WriteFile(filepath.Join(dir, who+".pem"), pemData, 0o600); err != nil {
			return err
		}
	}
	return nil
}
