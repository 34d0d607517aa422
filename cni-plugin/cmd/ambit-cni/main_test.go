package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/pkg/netnstest"
)

// pluginBin is the ambit-cni binary built once by TestMain, with
// ambit-cni-lookup (lookupBin) next to it, as the installer puts them.
var pluginBin, lookupBin string

func TestMain(m *testing.M) {
	netnstest.RemoveStale("ambcni")
	dir, err := os.MkdirTemp("", "ambit-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "ambit-cni")
	lookupBin = filepath.Join(dir, "ambit-cni-lookup")
	for _, b := range []struct{ out, pkg string }{{pluginBin, "."}, {lookupBin, "../ambit-cni-lookup"}} {
		out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b.out, err, out)
			_ = os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// fakeAgent is a node agent speaking cniapi on a Unix socket: it records
// the requests and answers each path with a PodResponse, or with an error
// when one is set for the path.
type fakeAgent struct {
	socket string
	srv    *http.Server

	mu     sync.Mutex
	calls  []string
	reqs   []cniapi.PodRequest
	resp   cniapi.PodResponse
	errors map[string]string // path -> error message
}

// shortDir is a temporary directory with a path short enough for a Unix
// socket (t.TempDir() paths grow with the test's name).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ambcni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func startAgent(t *testing.T, resp cniapi.PodResponse) *fakeAgent {
	t.Helper()
	a := &fakeAgent{socket: filepath.Join(shortDir(t), "cni.sock"), resp: resp, errors: map[string]string{}}
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, path := range []string{cniapi.PathAdd, cniapi.PathDel, cniapi.PathCheck} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			var req cniapi.PodRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			a.mu.Lock()
			a.calls = append(a.calls, path)
			a.reqs = append(a.reqs, req)
			msg, resp := a.errors[path], a.resp
			a.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			if msg != "" {
				w.WriteHeader(http.StatusInternalServerError)
				_ = json.NewEncoder(w).Encode(cniapi.ErrorResponse{Error: msg})
				return
			}
			_ = json.NewEncoder(w).Encode(resp)
		})
	}
	a.srv = &http.Server{Handler: mux}
	go func() { _ = a.srv.Serve(ln) }()
	t.Cleanup(a.stop)
	return a
}

func (a *fakeAgent) stop() { _ = a.srv.Close() }

func (a *fakeAgent) setError(path, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errors[path] = msg
}

func (a *fakeAgent) recorded() ([]string, []cniapi.PodRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...), append([]cniapi.PodRequest(nil), a.reqs...)
}

// result is what running the binary gave.
type result struct {
	code           int
	stdout, stderr []byte
}

// cniError is the JSON error a CNI plugin prints on failure.
type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
}

func runPlugin(t *testing.T, env map[string]string, stdin string) result {
	t.Helper()
	return runPluginAt(t, pluginBin, env, stdin)
}

// runPluginAt runs the plugin binary bin.
func runPluginAt(t *testing.T, bin string, env map[string]string, stdin string) result {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running ambit-cni: %v", err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.Bytes(), stderr: stderr.Bytes()}
}

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},{"name":"veth1","mac":"aa:bb:cc:dd:ee:03"},` +
	`{"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/cni-x"}],` +
	`"ips":[{"interface":2,"address":"10.244.1.5/24","gateway":"10.244.1.1"},{"interface":2,"address":"fd00:10:244:1::5/64","gateway":"fd00:10:244:1::1"}],` +
	`"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}],"dns":{"nameservers":["10.96.0.10"]}}`

// missingNetns is a CNI_NETNS that does not exist: the fake agent does
// not open it, and skel only refuses the plugin's own netns.
const missingNetns = "/var/run/netns/ambit-cni-test-does-not-exist"

const podArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u-1"

func netconf(version, extra string, withPrev bool) string {
	s := `{"cniVersion":"` + version + `","name":"k8s-pod-network","type":"ambit-cni"` + extra
	if withPrev {
		s += `,"prevResult":` + prevResult
	}
	return s + "}"
}

func cniEnv(cmd, args string) map[string]string {
	return map[string]string{
		"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c1", "CNI_NETNS": missingNetns, "CNI_IFNAME": "eth0",
		"CNI_ARGS": args, "CNI_PATH": "/opt/cni/bin",
	}
}

func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("stdout %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("stdout\n%s\nwant\n%s", got, want)
	}
}

// apiServer is a fake Kubernetes API server on loopback serving one
// namespace (labelled with nsLabels) and pod shop/cart-1, and a kubeconfig
// pointing at it.
func apiServer(t *testing.T, nsLabels map[string]string) (kubeconfig string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/shop", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "shop", "labels": nsLabels}})
	})
	mux.HandleFunc("GET /api/v1/namespaces/shop/pods/cart-1", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "cart-1", "namespace": "shop"},
			"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": "app"}}}})
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	data := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://%s"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, ln.Addr())
	if err := os.WriteFile(kubeconfig, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

func TestBinary(t *testing.T) {
	type agentMode int
	const (
		agentNone agentMode = iota // no agent listening
		agentEnrolled
		agentNotEnrolled
	)
	tests := []struct {
		name      string
		cmd       string
		args      string
		agent     agentMode
		agentErr  string // error the agent answers on the command's path
		conf      func(socket string) string
		noNetns   bool
		code      int
		stdout    string // JSON the plugin prints on success ("" = nothing)
		errCode   uint
		errHas    []string
		wantCalls []string
	}{
		{name: "ADD enrolled", cmd: "ADD", args: podArgs, agent: agentEnrolled,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, stdout: prevResult, wantCalls: []string{cniapi.PathAdd}},
		{name: "ADD not enrolled", cmd: "ADD", args: podArgs, agent: agentNotEnrolled,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, stdout: prevResult, wantCalls: []string{cniapi.PathAdd}},
		{name: "ADD agent error", cmd: "ADD", args: podArgs, agent: agentEnrolled, agentErr: "ztunnel did not ack pod shop/cart-1",
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, code: 1,
			errCode: 999, errHas: []string{"pod shop/cart-1 cannot start", "ztunnel did not ack"}, wantCalls: []string{cniapi.PathAdd}},
		{name: "ADD agent unreachable without kubeconfig fails closed", cmd: "ADD", args: podArgs, agent: agentNone,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, code: 1,
			errCode: 11, errHas: []string{"ambit-node-agent is not reachable", `no "kubeconfig"`, "cannot tell whether the pod is in the mesh"}},
		{name: "ADD agent unreachable with a missing kubeconfig fails closed", cmd: "ADD", args: podArgs, agent: agentNone,
			conf: func(s string) string {
				return netconf("1.0.0", `,"agentSocket":"`+s+`","kubeconfig":"/nonexistent/ambit-kubeconfig"`, true)
			}, code: 1, errCode: 11, errHas: []string{"cannot use the kubeconfig /nonexistent/ambit-kubeconfig", "cannot tell whether the pod is in the mesh"}},
		{name: "ADD agent unreachable with a missing lookup program fails closed", cmd: "ADD", args: podArgs, agent: agentNone,
			conf: func(s string) string {
				return netconf("1.0.0", `,"agentSocket":"`+s+`","kubeconfig":"/nonexistent/ambit-kubeconfig","lookupBinary":"/nonexistent/ambit-cni-lookup"`, true)
			}, code: 1, errCode: 11, errHas: []string{`"lookupBinary" /nonexistent/ambit-cni-lookup`, "cannot tell whether the pod is in the mesh"}},
		{name: "ADD excluded namespace passes without any agent", cmd: "ADD", args: "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1", agent: agentNone,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, stdout: prevResult},
		{name: "ADD not a kubernetes pod passes", cmd: "ADD", args: "", agent: agentNone,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, stdout: prevResult},
		{name: "DEL agent down succeeds", cmd: "DEL", args: podArgs, agent: agentNone,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }},
		{name: "DEL without netns tells the agent", cmd: "DEL", args: podArgs, agent: agentEnrolled, noNetns: true,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, false) }, wantCalls: []string{cniapi.PathDel}},
		{name: "DEL agent error succeeds", cmd: "DEL", args: podArgs, agent: agentEnrolled, agentErr: "boom",
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, wantCalls: []string{cniapi.PathDel}},
		{name: "CHECK captured", cmd: "CHECK", args: podArgs, agent: agentEnrolled,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, wantCalls: []string{cniapi.PathCheck}},
		{name: "CHECK not captured", cmd: "CHECK", args: podArgs, agent: agentEnrolled, agentErr: "pod shop/cart-1 is enrolled but not captured",
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, true) }, code: 1,
			errCode: 999, errHas: []string{"CHECK of pod shop/cart-1", "not captured"}, wantCalls: []string{cniapi.PathCheck}},
		{name: "CHECK without prevResult", cmd: "CHECK", args: podArgs, agent: agentEnrolled,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, false) }, code: 1, errCode: 7, errHas: []string{"no prevResult"}},
		{name: "STATUS succeeds with the agent down", cmd: "STATUS", agent: agentNone,
			conf: func(s string) string { return netconf("1.1.0", `,"agentSocket":"`+s+`"`, false) }},
		{name: "GC succeeds", cmd: "GC", agent: agentNone,
			conf: func(s string) string { return netconf("1.1.0", `,"agentSocket":"`+s+`"`, false) }},
		{name: "VERSION", cmd: "VERSION", conf: func(string) string { return "" },
			stdout: `{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`},
		{name: "config not JSON", cmd: "ADD", args: podArgs, agent: agentEnrolled, conf: func(string) string { return `{"cniVersion":` },
			code: 1, errCode: 6, errHas: []string{"network config"}},
		{name: "missing prevResult", cmd: "ADD", args: podArgs, agent: agentEnrolled,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`"`, false) }, code: 1,
			errCode: 7, errHas: []string{"ambit-cni must be chained after a primary CNI plugin (no prevResult)"}},
		{name: "bad agentTimeout", cmd: "ADD", args: podArgs, agent: agentEnrolled,
			conf: func(s string) string { return netconf("1.0.0", `,"agentSocket":"`+s+`","agentTimeout":"soon"`, true) }, code: 1,
			errCode: 7, errHas: []string{`invalid "agentTimeout"`, `"soon"`}},
		{name: "unknown cniVersion", cmd: "ADD", args: podArgs, agent: agentEnrolled,
			conf: func(s string) string { return netconf("9.9.9", `,"agentSocket":"`+s+`"`, true) }, code: 1,
			errCode: 1, errHas: []string{"incompatible CNI versions"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := filepath.Join(shortDir(t), "cni.sock")
			var agent *fakeAgent
			switch tt.agent {
			case agentEnrolled, agentNotEnrolled:
				agent = startAgent(t, cniapi.PodResponse{Enrolled: tt.agent == agentEnrolled, Reason: "test"})
				socket = agent.socket
				if tt.agentErr != "" {
					agent.setError(map[string]string{"ADD": cniapi.PathAdd, "DEL": cniapi.PathDel, "CHECK": cniapi.PathCheck}[tt.cmd], tt.agentErr)
				}
			}
			env := cniEnv(tt.cmd, tt.args)
			if tt.noNetns {
				delete(env, "CNI_NETNS")
			}
			res := runPlugin(t, env, tt.conf(socket))
			if res.code != tt.code {
				t.Fatalf("exit code = %d, want %d\nstdout: %s\nstderr: %s", res.code, tt.code, res.stdout, res.stderr)
			}
			switch {
			case tt.code != 0:
				var e cniError
				if err := json.Unmarshal(res.stdout, &e); err != nil {
					t.Fatalf("stdout %q is not a CNI error: %v", res.stdout, err)
				}
				if e.Code != tt.errCode {
					t.Errorf("error code = %d (%s), want %d", e.Code, e.Msg, tt.errCode)
				}
				for _, h := range tt.errHas {
					if !strings.Contains(e.Msg, h) {
						t.Errorf("error %q does not say %q", e.Msg, h)
					}
				}
			case tt.stdout != "":
				jsonEqual(t, res.stdout, tt.stdout)
			default:
				if len(bytes.TrimSpace(res.stdout)) != 0 {
					t.Errorf("stdout = %q, want nothing", res.stdout)
				}
			}
			if agent == nil {
				return
			}
			calls, reqs := agent.recorded()
			if !reflect.DeepEqual(calls, tt.wantCalls) {
				t.Errorf("agent calls = %v, want %v", calls, tt.wantCalls)
			}
			if len(reqs) == 1 {
				want := cniapi.PodRequest{ContainerID: "c1", Netns: missingNetns, IfName: "eth0", PodNamespace: "shop", PodName: "cart-1", PodUID: "u-1",
					IPs: []string{"10.244.1.5", "fd00:10:244:1::5"}}
				if tt.noNetns {
					want.Netns, want.IPs = "", nil
				}
				if !reflect.DeepEqual(reqs[0], want) {
					t.Errorf("agent request = %+v, want %+v", reqs[0], want)
				}
			}
		})
	}
}

// copyFile copies the executable src to dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestBinaryUnreachableAsksKubernetes runs the real ambit-cni-lookup from
// the real plugin against a fake API server on loopback, with the lookup
// program found each way the plugin looks for it.
func TestBinaryUnreachableAsksKubernetes(t *testing.T) {
	// alone is a copy of the plugin in a directory without ambit-cni-lookup.
	alone := filepath.Join(shortDir(t), "ambit-cni")
	copyFile(t, pluginBin, alone)
	ambient := map[string]string{"ambit.dev/dataplane-mode": "ambient"}
	tests := []struct {
		name     string
		bin      string // plugin binary; "" means pluginBin
		cniPath  string // "" means /opt/cni/bin
		lookup   string // "lookupBinary" of the configuration
		podArgs  string // "" means podArgs
		nsLabels map[string]string
		code     int
		errHas   []string
	}{
		{name: "namespace not in the mesh: pod starts", nsLabels: map[string]string{"team": "shop"}},
		{name: "namespace in the mesh: pod waits for the agent", nsLabels: ambient,
			code: 1, errHas: []string{"pod shop/cart-1 is in the mesh"}},
		{name: "pod not found: fails closed", nsLabels: map[string]string{"team": "shop"},
			podArgs: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=gone-1",
			code:    1, errHas: []string{"does not exist in the Kubernetes API", "gone-1", "that the pod still exists"}},
		{name: "lookup program found in CNI_PATH", bin: alone, cniPath: "/nonexistent:" + filepath.Dir(lookupBin), nsLabels: ambient,
			code: 1, errHas: []string{"pod shop/cart-1 is in the mesh"}},
		{name: "lookup program from lookupBinary", bin: alone, lookup: lookupBin, nsLabels: map[string]string{"team": "shop"}},
		{name: "lookup program nowhere: fails closed", bin: alone, nsLabels: map[string]string{"team": "shop"},
			code: 1, errHas: []string{"cannot find ambit-cni-lookup (looked in " + filepath.Dir(alone) + ", /opt/cni/bin)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kubeconfig := apiServer(t, tt.nsLabels)
			socket := filepath.Join(shortDir(t), "cni.sock")
			args := podArgs
			if tt.podArgs != "" {
				args = tt.podArgs
			}
			env := cniEnv("ADD", args)
			if tt.cniPath != "" {
				env["CNI_PATH"] = tt.cniPath
			}
			extra := `,"agentSocket":"` + socket + `","kubeconfig":"` + kubeconfig + `"`
			if tt.lookup != "" {
				extra += `,"lookupBinary":"` + tt.lookup + `"`
			}
			bin := pluginBin
			if tt.bin != "" {
				bin = tt.bin
			}
			res := runPluginAt(t, bin, env, netconf("1.0.0", extra, true))
			if res.code != tt.code {
				t.Fatalf("exit code = %d, want %d\nstdout: %s\nstderr: %s", res.code, tt.code, res.stdout, res.stderr)
			}
			if tt.code == 0 {
				jsonEqual(t, res.stdout, prevResult)
				return
			}
			var e cniError
			if err := json.Unmarshal(res.stdout, &e); err != nil || e.Code != 11 {
				t.Fatalf("stdout = %s (%v), want CNI error 11", res.stdout, err)
			}
			for _, h := range tt.errHas {
				if !strings.Contains(e.Msg, h) {
					t.Errorf("error %q does not say %q", e.Msg, h)
				}
			}
		})
	}
}

// TestPluginLinksNoKubernetesClient guards the start-up time of every CNI
// call: client-go and apimachinery belong in ambit-cni-lookup only.
func TestPluginLinksNoKubernetesClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/") {
			t.Errorf("ambit-cni depends on %s: keep the Kubernetes client in ambit-cni-lookup (internal/plugin/kube)", dep)
		}
	}
}
