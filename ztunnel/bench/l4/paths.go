package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/testtopo"
)

// path is one way from the client pod to the server pod.
type path interface {
	// Name is the table column header.
	Name() string
	// Start launches the path's proxies (if any) and returns once a
	// connection through the path works.
	Start(ctx context.Context) error
	// Stop terminates the proxies.
	Stop() error
	// Addr is the address the client pod dials to reach server port.
	Addr(port int) string
	// PIDs are the proxy processes (client side first); nil for none.
	PIDs() []int
	// Output is what the proxies logged so far.
	Output() string
	// Env is the pods and servers the path connects.
	Env() *env
}

// env is what every path needs.
type env struct {
	topo           *testtopo.Topology
	client, server *testtopo.Pod
	dir            string   // scratch directory for configs and keys
	srv            *servers // the bench's servers in the server pod
}

// dialer returns the dialFunc for p: connections originate in the client
// pod's netns.
func (e *env) dialer(p path) dialFunc {
	return func(ctx context.Context, port int) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return e.topo.Dial(ctx, e.client.NetnsPath, "tcp4", p.Addr(port))
	}
}

// direct: the client pod connects to the server pod, no proxy.
type direct struct{ e *env }

func (d *direct) Name() string                { return "direct pod→pod" }
func (d *direct) Start(context.Context) error { return nil }
func (d *direct) Stop() error                 { return nil }
func (d *direct) PIDs() []int                 { return nil }
func (d *direct) Output() string              { return "" }
func (d *direct) Env() *env                   { return d.e }
func (d *direct) Addr(port int) string {
	return netip.AddrPortFrom(d.e.server.IP, uint16(port)).String()
}

// haproxyPair: HAProxy in the client pod accepts plaintext on loopback and
// originates TLS 1.3 with a client certificate to HAProxy in the server
// pod, which requires and verifies the client certificate, terminates TLS
// and forwards to the server on loopback.
type haproxyPair struct {
	e       *env
	bin     string
	maxConn int
	threads int
	client  *testtopo.Process
	server  *testtopo.Process
}

// Port offsets of the HAProxy pair: the client-side frontend listens on
// 127.0.0.1:port+1000, the TLS hop uses server IP port+2000.
const (
	haproxyFrontOffset = 1000
	haproxyTLSOffset   = 2000
)

func (h *haproxyPair) Name() string { return "HAProxy mTLS pair" }
func (h *haproxyPair) Addr(port int) string {
	return fmt.Sprintf("127.0.0.1:%d", port+haproxyFrontOffset)
}

func (h *haproxyPair) PIDs() []int {
	if h.client == nil || h.server == nil {
		return nil
	}
	return []int{h.client.Pid(), h.server.Pid()}
}

var haproxyConfig = template.Must(template.New("haproxy").Parse(`# written by bench/l4
global
    maxconn {{.MaxConn}}
    nbthread {{.Threads}}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode tcp
    maxconn {{.MaxConn}}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
{{range .Ports}}{{if $.Client}}
frontend f{{.}}
    bind 127.0.0.1:{{$.Front .}}
    default_backend b{{.}}
backend b{{.}}
    server s {{$.ServerIP}}:{{$.TLS .}} ssl crt {{$.Dir}}/client.pem ca-file {{$.Dir}}/ca.pem verify required
{{else}}
frontend f{{.}}
    bind {{$.ServerIP}}:{{$.TLS .}} ssl crt {{$.Dir}}/server.pem ca-file {{$.Dir}}/ca.pem verify required
    default_backend b{{.}}
backend b{{.}}
    server s 127.0.0.1:{{.}}
{{end}}{{end}}`))

type haproxyData struct {
	Client   bool
	Threads  int
	MaxConn  int
	Ports    []int
	ServerIP netip.Addr
	Dir      string
}

func (haproxyData) Front(p int) int { return p + haproxyFrontOffset }
func (haproxyData) TLS(p int) int   { return p + haproxyTLSOffset }

func (h *haproxyPair) Env() *env { return h.e }

func (h *haproxyPair) Output() string {
	var b strings.Builder
	for _, p := range []*testtopo.Process{h.client, h.server} {
		if p != nil {
			b.WriteString(p.Output())
		}
	}
	return b.String()
}

func (h *haproxyPair) Start(ctx context.Context) error {
	if err := writeHAProxyCerts(h.e.dir); err != nil {
		return err
	}
	for _, side := range []struct {
		client bool
		pod    *testtopo.Pod
		proc   **testtopo.Process
	}{{false, h.e.server, &h.server}, {true, h.e.client, &h.client}} {
		var b strings.Builder
		if err := haproxyConfig.Execute(&b, haproxyData{
			Client: side.client, Threads: h.threads, MaxConn: h.maxConn, Ports: []int{sinkPort, echoPort},
			ServerIP: h.e.server.IP, Dir: h.e.dir,
		}); err != nil {
			return err
		}
		name := "haproxy-server.cfg"
		if side.client {
			name = "haproxy-client.cfg"
		}
		cfg := filepath.Join(h.e.dir, name)
		if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
			return err
		}
		// -db: foreground, no master process, so the pid is the proxy.
		p, err := h.e.topo.Start(ctx, side.pod.NetnsPath, h.bin, "-db", "-f", cfg)
		if err != nil {
			return err
		}
		*side.proc = p
	}
	if err := waitPath(ctx, h.e.dialer(h), 20*time.Second); err != nil {
		return fmt.Errorf("HAProxy pair: %w\nclient haproxy: %s\nserver haproxy: %s", err, h.client.Output(), h.server.Output())
	}
	return nil
}

func (h *haproxyPair) Stop() error {
	var errs []error
	for _, p := range []*testtopo.Process{h.client, h.server} {
		if p != nil {
			_ = p.Stop(5 * time.Second)
		}
	}
	h.client, h.server = nil, nil
	return errors.Join(errs...)
}

// writeHAProxyCerts writes ca.pem, client.pem and server.pem (chain + key):
// ECDSA P-256 X.509-SVIDs from the same kind of local CA ztunnel uses, so
// both tunnels do equivalent cryptography.
func writeHAProxyCerts(dir string) error {
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.RootsPEM(), 0o600); err != nil {
		return err
	}
	for _, who := range []string{"client", "server"} {
		id, err := identity.New(ca.TrustDomain(), "bench", who)
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

// ambit: one ztunnel per node, running in the node's netns and capturing
// its pod (listeners inside the pod netns); the pods carry the real
// redirection rules. The client pod's connection to the server pod is
// REDIRECTed to ztunnel on node1, carried over HBONE (mTLS, HTTP/2 CONNECT)
// to ztunnel's :15008 in the server pod and delivered to the server from
// the client's address.
type ambit struct {
	e        *env
	bin      string
	logLevel string
	procs    [2]*testtopo.Process
	// extraPods are more pods on node1 (for the pod-count RSS row).
	extraPods []*testtopo.Pod
	redirect  bool
}

func (a *ambit) Name() string { return "Ambit HBONE (2 ztunnels)" }
func (a *ambit) Addr(port int) string {
	return netip.AddrPortFrom(a.e.server.IP, uint16(port)).String()
}

func (a *ambit) PIDs() []int {
	if a.procs[0] == nil || a.procs[1] == nil {
		return nil
	}
	return []int{a.procs[0].Pid(), a.procs[1].Pid()}
}

// workload is one entry of the workloads file.
type workload struct {
	uid, name, sa, node string
	ip                  netip.Addr
	netns               string // set only in the file of the pod's node
}

func workloadsYAML(ws []workload) string {
	var b strings.Builder
	b.WriteString("# written by bench/l4\nworkloads:\n")
	for _, w := range ws {
		fmt.Fprintf(&b, "- uid: %s\n  name: %s\n  namespace: bench\n  serviceAccount: %s\n  node: %s\n  addresses: [%q]\n  protocol: HBONE\n  mtlsMode: PERMISSIVE\n",
			w.uid, w.name, w.sa, w.node, w.ip.String())
		if w.netns != "" {
			fmt.Fprintf(&b, "  netns: %s\n", w.netns)
		}
	}
	b.WriteString("services: []\n")
	return b.String()
}

// writeWorkloads writes one workloads file per node; each names the netns
// of its own node's pods only.
func (a *ambit) writeWorkloads() error {
	pods := append([]*testtopo.Pod{a.e.client, a.e.server}, a.extraPods...)
	for _, node := range []*testtopo.Node{a.e.client.Node, a.e.server.Node} {
		var ws []workload
		for _, p := range pods {
			w := workload{uid: "uid-" + p.Name, name: p.Name, sa: "sa-" + p.Name, node: p.Node.Name, ip: p.IP}
			if p == a.e.client {
				w.name, w.sa = "client", "client"
			} else if p == a.e.server {
				w.name, w.sa = "server", "server"
			}
			if p.Node == node {
				w.netns = p.NetnsPath
			}
			ws = append(ws, w)
		}
		if err := os.WriteFile(a.workloadsFile(node), []byte(workloadsYAML(ws)), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (a *ambit) workloadsFile(n *testtopo.Node) string {
	return filepath.Join(a.e.dir, "workloads-"+n.Name+".yaml")
}

func (a *ambit) Start(ctx context.Context) error {
	caCert, caKey := filepath.Join(a.e.dir, "ztunnel-ca.pem"), filepath.Join(a.e.dir, "ztunnel-ca-key.pem")
	if _, err := os.Stat(caCert); err != nil {
		certPEM, keyPEM, err := identity.GenerateRoot(identity.DefaultTrustDomain, time.Now(), 48*time.Hour)
		if err != nil {
			return err
		}
		if err := os.WriteFile(caCert, certPEM, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(caKey, keyPEM, 0o600); err != nil {
			return err
		}
	}
	if err := a.writeWorkloads(); err != nil {
		return err
	}
	for i, node := range []*testtopo.Node{a.e.client.Node, a.e.server.Node} {
		p, err := a.e.topo.Start(ctx, node.NetnsPath, a.bin,
			"--node-name", node.Name,
			"--workloads-file", a.workloadsFile(node),
			"--ca-cert", caCert, "--ca-key", caKey,
			"--trust-domain", identity.DefaultTrustDomain,
			"--admin-addr", "127.0.0.1:15000",
			"--metrics-addr", ":15020", "--ready-addr", ":15021",
			"--drain-period", "2s",
			"--log-level", a.logLevel, "--log-format", "text",
		)
		if err != nil {
			return err
		}
		a.procs[i] = p
	}
	for i, node := range []*testtopo.Node{a.e.client.Node, a.e.server.Node} {
		if err := a.waitReady(ctx, node, a.procs[i]); err != nil {
			return err
		}
	}
	if !a.redirect {
		for _, pod := range []*testtopo.Pod{a.e.client, a.e.server} {
			if err := a.e.topo.InstallRedirect(ctx, pod); err != nil {
				return err
			}
		}
		a.redirect = true
	}
	if err := waitPath(ctx, a.e.dialer(a), 30*time.Second); err != nil {
		return fmt.Errorf("Ambit path: %w\n%s", err, a.outputs())
	}
	return nil
}

func (a *ambit) Env() *env { return a.e }

func (a *ambit) Output() string {
	var b strings.Builder
	for _, p := range a.procs {
		if p != nil {
			b.WriteString(p.Output())
		}
	}
	return b.String()
}

// outputs returns the tail of both ztunnels' logs, for errors.
func (a *ambit) outputs() string {
	var b strings.Builder
	for i, p := range a.procs {
		if p == nil {
			continue
		}
		out := p.Output()
		if len(out) > 4000 {
			out = "..." + out[len(out)-4000:]
		}
		fmt.Fprintf(&b, "ztunnel node%d (pid %d, exited %v %v):\n%s\n", i+1, p.Pid(), p.Exited(), p.Err(), out)
	}
	return b.String()
}

// nodeGet fetches http://127.0.0.1:<port><path> inside a node's netns.
func (a *ambit) nodeGet(ctx context.Context, node *testtopo.Node, port int, path string) (int, string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return a.e.topo.Dial(ctx, node.NetnsPath, "tcp4", addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
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

// waitReady polls the ztunnel's /healthz/ready until 200.
func (a *ambit) waitReady(ctx context.Context, node *testtopo.Node, p *testtopo.Process) error {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p.Exited() {
			return fmt.Errorf("ztunnel on %s exited: %v\n%s", node.Name, p.Err(), a.outputs())
		}
		code, body, err := a.nodeGet(ctx, node, 15021, "/healthz/ready")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, strings.TrimSpace(body), err)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("ztunnel on %s not ready within 30s (last answer: %s)\n%s", node.Name, last, a.outputs())
}

// openedConnections sums istio_tcp_connections_opened_total on node's
// ztunnel: proof that traffic went through it.
func (a *ambit) openedConnections(ctx context.Context, node *testtopo.Node) (float64, error) {
	code, body, err := a.nodeGet(ctx, node, 15020, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics answered %d", code)
	}
	var sum float64
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, "istio_tcp_connections_opened_total") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum, nil
}

func (a *ambit) Stop() error {
	for i, p := range a.procs {
		if p != nil {
			_ = p.Stop(10 * time.Second)
		}
		a.procs[i] = nil
	}
	return nil
}

// removeRedirect undoes the pods' redirection rules.
func (a *ambit) removeRedirect(ctx context.Context) error {
	if !a.redirect {
		return nil
	}
	a.redirect = false
	var errs []error
	for _, pod := range []*testtopo.Pod{a.e.client, a.e.server} {
		errs = append(errs, a.e.topo.RemoveRedirect(ctx, pod))
	}
	return errors.Join(errs...)
}
