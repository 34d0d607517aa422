package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
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
	if err := benchkit.WriteCertBundles(h.e.dir, "client", "server"); err != nil {
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

// writeWorkloads writes one workloads file per node; each names the netns
// of its own node's pods only.
func (a *ambit) writeWorkloads() error {
	pods := append([]*testtopo.Pod{a.e.client, a.e.server}, a.extraPods...)
	for _, node := range []*testtopo.Node{a.e.client.Node, a.e.server.Node} {
		var ws []benchkit.Workload
		for _, p := range pods {
			w := benchkit.Workload{UID: "uid-" + p.Name, Name: p.Name, ServiceAccount: "sa-" + p.Name, Node: p.Node.Name, IP: p.IP}
			if p == a.e.client {
				w.Name, w.ServiceAccount = "client", "client"
			} else if p == a.e.server {
				w.Name, w.ServiceAccount = "server", "server"
			}
			if p.Node == node {
				w.Netns = p.NetnsPath
			}
			ws = append(ws, w)
		}
		if err := os.WriteFile(a.workloadsFile(node), []byte(benchkit.WorkloadsYAML(ws, nil)), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (a *ambit) workloadsFile(n *testtopo.Node) string {
	return filepath.Join(a.e.dir, "workloads-"+n.Name+".yaml")
}

func (a *ambit) Start(ctx context.Context) error {
	caCert, caKey, err := benchkit.WriteCARoot(a.e.dir)
	if err != nil {
		return err
	}
	if err := a.writeWorkloads(); err != nil {
		return err
	}
	for i, node := range []*testtopo.Node{a.e.client.Node, a.e.server.Node} {
		p, err := benchkit.StartZtunnel(ctx, a.e.topo, node, benchkit.ZtunnelConfig{
			Bin: a.bin, WorkloadsFile: a.workloadsFile(node), CACert: caCert, CAKey: caKey, LogLevel: a.logLevel})
		if err != nil {
			return err
		}
		a.procs[i] = p
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
		if p != nil {
			fmt.Fprintf(&b, "ztunnel node%d %s\n", i+1, benchkit.Tail(p))
		}
	}
	return b.String()
}

// openedConnections sums istio_tcp_connections_opened_total on node's
// ztunnel: proof that traffic went through it.
func (a *ambit) openedConnections(ctx context.Context, node *testtopo.Node) (float64, error) {
	return benchkit.MetricSum(ctx, a.e.topo, node.NetnsPath, 15020, "istio_tcp_connections_opened_total")
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
