package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/xdstest"
	"ambit.dev/ztunnel/bench/benchkit"
)

// Ports and addresses of the topology.
const (
	waypointPort = 8080 // server port behind the waypoint (Service port 80)
	l4Port       = 8081 // server port no waypoint guards (the L4-only path)
	servicePort  = 80
	refFront     = 9080 // reference: client-side HAProxy on 127.0.0.1
	refL7        = 9443 // reference: the L7 HAProxy (TLS)
	refServer    = 9444 // reference: server-side HAProxy (TLS)
	xdsPort      = 15012
)

// serviceVIP is the VIP of the Service "web" behind the waypoint.
var serviceVIP = netip.MustParseAddr("10.96.0.10")

// path is one way from a client pod to a server: a table column.
type path struct {
	name string
	// dial connects from the client pod through the path.
	dial dialFunc
	// pids are the proxy processes on the path (nil: none); l7 is the
	// index in pids of the L7 proxy (-1: none).
	pids func() []int
	l7   int
	// check returns notes proving traffic took the path (after the load).
	check func(ctx context.Context) []string
}

// topology is the bench's world: node1 holds the clients, node2 the
// servers, node3 the L7 proxies (waypoint pod, reference proxy pod).
// Pod 1 of node1 and node2 are in the mesh (redirection rules, ztunnel).
type topology struct {
	t                       *benchkit.Topology
	meshClient, plainClient *benchkit.Pod
	meshServer, plainServer *benchkit.Pod
	waypointPod, refPod     *benchkit.Pod
	dir                     string
}

func (tp *topology) dialer(pod *benchkit.Pod, addr string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return tp.t.Dial(ctx, pod.NetnsPath, "tcp4", addr)
	}
}

// mesh is the Ambit side: a ztunnel on node1 and node2, the waypoint on
// node3, its control plane in the bench.
type mesh struct {
	tp       *topology
	ztunnels [2]*benchkit.Process
	waypoint *benchkit.Process
	cp       *controlPlane
	redirect bool
}

func (m *mesh) waypointSvc() xdstest.Service {
	ip := m.tp.meshServer.IP
	return xdstest.Service{
		Name: "web", Namespace: benchkit.Namespace, Port: servicePort, Protocol: "http", VIPs: []netip.Addr{serviceVIP},
		Endpoints: []xdstest.Endpoint{{
			Tunnel: netip.AddrPortFrom(ip, 15008), Destination: netip.AddrPortFrom(ip, waypointPort),
			Identity: "spiffe://" + identity.DefaultTrustDomain + "/ns/" + benchkit.Namespace + "/sa/server",
			Workload: "server", Namespace: benchkit.Namespace, Node: m.tp.meshServer.Node.Name,
		}},
	}
}

// workloads is the mesh as ztunnel sees it: the client, the server
// (backing web:80 → 8080 only: 8081 stays L4) and the waypoint pod.
func (m *mesh) workloads(node *benchkit.Node) string {
	tp := m.tp
	svc := m.waypointSvc()
	ws := []benchkit.Workload{
		{UID: "uid-client", Name: "client", ServiceAccount: "client", Node: tp.meshClient.Node.Name, IP: tp.meshClient.IP},
		{UID: "uid-server", Name: "server", ServiceAccount: "server", Node: tp.meshServer.Node.Name, IP: tp.meshServer.IP,
			Services: map[string]map[uint16]uint16{benchkit.Namespace + "/" + svc.Host(): {servicePort: waypointPort}}},
		{UID: "uid-waypoint", Name: "waypoint", ServiceAccount: "waypoint", Node: tp.waypointPod.Node.Name, IP: tp.waypointPod.IP},
	}
	for i, p := range []*benchkit.Pod{tp.meshClient, tp.meshServer} {
		if p.Node == node {
			ws[i].Netns = p.NetnsPath
		}
	}
	return benchkit.WorkloadsYAML(ws, []benchkit.Service{{Name: "web", Hostname: svc.Host(), VIPs: []netip.Addr{serviceVIP},
		Ports: map[uint16]uint16{servicePort: waypointPort}, Waypoint: tp.waypointPod.IP}})
}

func (m *mesh) start(ctx context.Context, ztunnelBin, waypointBin, zLogLevel, wLogLevel string, wEnv []string) error {
	tp := m.tp
	caCert, caKey, err := benchkit.WriteCARoot(tp.dir)
	if err != nil {
		return err
	}
	rootPEM, err := os.ReadFile(caCert)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(caKey)
	if err != nil {
		return err
	}
	for i, node := range []*benchkit.Node{tp.meshClient.Node, tp.meshServer.Node} {
		f := filepath.Join(tp.dir, "workloads-"+node.Name+".yaml")
		if err := os.WriteFile(f, []byte(m.workloads(node)), 0o600); err != nil {
			return err
		}
		p, err := benchkit.StartZtunnel(ctx, tp.t, node, benchkit.ZtunnelConfig{Bin: ztunnelBin, WorkloadsFile: f, CACert: caCert, CAKey: caKey, LogLevel: zLogLevel})
		if err != nil {
			return err
		}
		m.ztunnels[i] = p
	}
	// The waypoint's control plane: the CA signs with the ztunnels' root.
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: identity.DefaultTrustDomain, SigningCertPEM: rootPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		return err
	}
	ln, err := tp.t.Listen(tp.waypointPod.NetnsPath, "tcp4", fmt.Sprintf("127.0.0.1:%d", xdsPort))
	if err != nil {
		return err
	}
	if m.cp, err = startControlPlane(ln, ca, rootPEM, keyPEM, []xdstest.Service{m.waypointSvc()}); err != nil {
		ln.Close()
		return err
	}
	rootFile, tokenFile, err := writeWaypointFiles(tp.dir, rootPEM)
	if err != nil {
		return err
	}
	cpAddr := fmt.Sprintf("127.0.0.1:%d", xdsPort)
	cmd := exec.Command(waypointBin,
		"--xds-address", cpAddr, "--ca-address", cpAddr,
		"--root-cert-file", rootFile, "--token-file", tokenFile,
		"--trust-domain", identity.DefaultTrustDomain,
		"--pod-name", "waypoint-0", "--pod-namespace", benchkit.Namespace, "--service-account", "waypoint",
		"--pod-ips", tp.waypointPod.IP.String(), "--gateway", gatewayKey,
		"--hbone-addr", ":15008", "--ready-addr", ":15021", "--metrics-addr", ":15020", "--admin-addr", "127.0.0.1:15000",
		"--drain-period", "1s", "--log-level", wLogLevel, "--log-format", "text")
	cmd.Env = append(os.Environ(), wEnv...)
	m.waypoint, err = tp.t.StartCmd(ctx, tp.waypointPod.NetnsPath, cmd)
	if err != nil {
		return err
	}
	if err := benchkit.WaitHTTPReady(ctx, tp.t, tp.waypointPod.NetnsPath, 15021, "waypoint", m.waypoint); err != nil {
		return err
	}
	for _, pod := range []*benchkit.Pod{tp.meshClient, tp.meshServer} {
		if err := tp.t.InstallRedirect(ctx, pod); err != nil {
			return err
		}
	}
	m.redirect = true
	return nil
}

func (m *mesh) stop(ctx context.Context) []string {
	var notes []string
	if m.redirect {
		for _, pod := range []*benchkit.Pod{m.tp.meshClient, m.tp.meshServer} {
			_ = m.tp.t.RemoveRedirect(ctx, pod)
		}
	}
	for i, p := range append(m.ztunnels[:], m.waypoint) {
		if p == nil {
			continue
		}
		who := "waypoint"
		if i < 2 {
			who = fmt.Sprintf("ztunnel node%d", i+1)
		}
		for _, l := range benchkit.ProblemLines(p.Output()) {
			notes = append(notes, who+" "+l)
		}
		_ = p.Stop(5 * time.Second)
	}
	if m.cp != nil {
		m.cp.Close()
	}
	return notes
}

// counters are notes proving the load went through the mesh.
func (m *mesh) counters(ctx context.Context) []string {
	tp := m.tp
	var out []string
	for i, node := range []*benchkit.Node{tp.meshClient.Node, tp.meshServer.Node} {
		v, err := benchkit.MetricSum(ctx, tp.t, node.NetnsPath, 15020, "istio_tcp_connections_opened_total")
		out = append(out, fmt.Sprintf("ztunnel node%d istio_tcp_connections_opened_total %.0f %v", i+1, v, errOrEmpty(err)))
	}
	v, err := benchkit.MetricSum(ctx, tp.t, tp.waypointPod.NetnsPath, 15020, "istio_requests_total")
	out = append(out, fmt.Sprintf("waypoint istio_requests_total %.0f %v", v, errOrEmpty(err)))
	return out
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}

// reference is the same topology with HAProxy: a TCP mTLS proxy in the
// client pod, an HTTP-mode HAProxy in the proxy pod on node3 (TLS in with
// a required client certificate, HTTP routing, TLS out with its own),
// and a TCP mTLS terminator in the server pod — the hops of ztunnel →
// waypoint → ztunnel, with HAProxy in each.
type reference struct {
	tp    *topology
	bin   string
	procs [3]*benchkit.Process // client side, L7, server side
}

var haproxyConfig = template.Must(template.New("haproxy").Parse(`# written by bench/l7 ({{.Role}})
global
    nbthread {{.Threads}}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode {{if eq .Role "l7"}}http{{else}}tcp{{end}}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-keep-alive 1h
{{- if eq .Role "client"}}
frontend f
    bind 127.0.0.1:{{.Front}}
    default_backend b
backend b
    server s {{.Next}} ssl crt {{.Dir}}/client.pem ca-file {{.Dir}}/ca.pem verify required
{{- else if eq .Role "l7"}}
frontend f
    bind {{.Listen}} ssl crt {{.Dir}}/proxy.pem ca-file {{.Dir}}/ca.pem verify required
    option http-keep-alive
    http-request set-header X-Forwarded-Proto https
    use_backend b if { path_beg / }
backend b
    http-reuse always
    server s {{.Next}} ssl crt {{.Dir}}/proxy.pem ca-file {{.Dir}}/ca.pem verify required
{{- else}}
frontend f
    bind {{.Listen}} ssl crt {{.Dir}}/server.pem ca-file {{.Dir}}/ca.pem verify required
    default_backend b
backend b
    server s {{.Next}}
{{- end}}
`))

type haproxyData struct {
	Role         string // client | l7 | server
	Threads      int
	Front        int
	Listen, Next string
	Dir          string
}

func (r *reference) configs() []haproxyData {
	tp := r.tp
	l7 := netip.AddrPortFrom(tp.refPod.IP, refL7).String()
	srv := netip.AddrPortFrom(tp.plainServer.IP, refServer).String()
	th := nproc()
	return []haproxyData{
		{Role: "client", Threads: th, Front: refFront, Next: l7, Dir: tp.dir},
		{Role: "l7", Threads: th, Listen: l7, Next: srv, Dir: tp.dir},
		{Role: "server", Threads: th, Listen: srv, Next: fmt.Sprintf("127.0.0.1:%d", waypointPort), Dir: tp.dir},
	}
}

func (r *reference) start(ctx context.Context) error {
	tp := r.tp
	if err := benchkit.WriteCertBundles(tp.dir, "client", "proxy", "server"); err != nil {
		return err
	}
	pods := []*benchkit.Pod{tp.plainClient, tp.refPod, tp.plainServer}
	for i, d := range r.configs() {
		var b strings.Builder
		if err := haproxyConfig.Execute(&b, d); err != nil {
			return err
		}
		f := filepath.Join(tp.dir, "haproxy-"+d.Role+".cfg")
		if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
			return err
		}
		// -db: foreground, no master process: the pid is the proxy.
		p, err := tp.t.Start(ctx, pods[i].NetnsPath, r.bin, "-db", "-f", f)
		if err != nil {
			return err
		}
		r.procs[i] = p
	}
	return nil
}

func (r *reference) stop() []string {
	var notes []string
	for _, p := range r.procs {
		if p != nil {
			notes = append(notes, benchkit.ProblemLines(p.Output())...)
			_ = p.Stop(5 * time.Second)
		}
	}
	return notes
}

func pidsOf(ps ...*benchkit.Process) []int {
	var out []int
	for _, p := range ps {
		if p == nil {
			return nil
		}
		out = append(out, p.Pid())
	}
	return out
}
