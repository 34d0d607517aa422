package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/pkg/enrol"
)

// fakeAgent records requests and answers with resp/err; the plugin calls
// it from one goroutine.
type fakeAgent struct {
	calls  []string
	reqs   []cniapi.PodRequest
	socket string
	resp   cniapi.PodResponse
	err    error
}

func (a *fakeAgent) do(op string, req cniapi.PodRequest) (cniapi.PodResponse, error) {
	a.calls = append(a.calls, op)
	a.reqs = append(a.reqs, req)
	return a.resp, a.err
}

func (a *fakeAgent) Add(_ context.Context, r cniapi.PodRequest) (cniapi.PodResponse, error) {
	return a.do("add", r)
}
func (a *fakeAgent) Del(_ context.Context, r cniapi.PodRequest) (cniapi.PodResponse, error) {
	return a.do("del", r)
}
func (a *fakeAgent) Check(_ context.Context, r cniapi.PodRequest) (cniapi.PodResponse, error) {
	return a.do("check", r)
}

// fakeLookup answers Lookup from fixed values.
type fakeLookup struct {
	ns  enrol.Namespace
	pod enrol.Pod
	err error
}

func (l fakeLookup) Lookup(_ context.Context, namespace, _ string) (enrol.Namespace, enrol.Pod, error) {
	p := l.pod
	p.Namespace = namespace
	return l.ns, p, l.err
}

var (
	unreachable = fmt.Errorf("%w at /x.sock (is the ambit-node-agent pod running on this node?): dial: no such file", cniapi.ErrUnreachable)
	ambientNS   = enrol.Namespace{Labels: map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}}
)

const podArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_UID=u-1"

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni","agentSocket":"/x.sock","agentTimeout":"3s"` + extra + `,"prevResult":` + prev100 + `}`)
}

func cmdArgs(stdin []byte, args string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c1", Netns: "/var/run/netns/cni-1", IfName: "eth0", Args: args, Path: "/opt/cni/bin", StdinData: stdin}
}

type env struct {
	agent   *fakeAgent
	lookup  *fakeLookup
	lookErr error
	src     LookupSource
	stdout  bytes.Buffer
	stderr  bytes.Buffer
}

func (e *env) plugin() *Plugin {
	return New(Options{
		Stdout: &e.stdout,
		Stderr: &e.stderr,
		NewAgent: func(socket string, _ time.Duration) Agent {
			e.agent.socket = socket
			return e.agent
		},
		NewDecider: func(src LookupSource) (Decider, error) {
			e.src = src
			if e.lookErr != nil {
				return nil, e.lookErr
			}
			if e.lookup == nil {
				return nil, errors.New("no lookup in this test")
			}
			return LookupDecider{Lookup: *e.lookup}, nil
		},
		Executable: func() (string, error) { return "/opt/cni/bin/ambit-cni", nil },
	})
}

func jsonEqual(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("output %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	// The 0.4.0 result type always prints "dns": {}, which means no DNS.
	for _, m := range []any{g, w} {
		if obj, ok := m.(map[string]any); ok {
			if dns, ok := obj["dns"].(map[string]any); ok && len(dns) == 0 {
				delete(obj, "dns")
			}
		}
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("output\n%s\nwant (prevResult unchanged)\n%s", got, want)
	}
}

func wantCNIError(t *testing.T, err error, code uint, has ...string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want a *types.Error", err)
	}
	if e.Code != code {
		t.Errorf("error code = %d (%s), want %d", e.Code, e.Msg, code)
	}
	for _, h := range has {
		if !strings.Contains(e.Msg, h) {
			t.Errorf("error %q does not say %q", e.Msg, h)
		}
	}
}

func TestAdd(t *testing.T) {
	tests := []struct {
		name      string
		stdin     []byte
		args      string
		agent     fakeAgent
		lookup    *fakeLookup
		lookErr   error
		wantCalls []string
		code      uint // 0: success, prevResult printed unchanged
		errHas    []string
	}{
		{name: "enrolled", stdin: conf(""), args: podArgs, agent: fakeAgent{resp: cniapi.PodResponse{Enrolled: true, Reason: "ns labelled"}}, wantCalls: []string{"add"}},
		{name: "not enrolled", stdin: conf(""), args: podArgs, agent: fakeAgent{resp: cniapi.PodResponse{Reason: "ns not labelled"}}, wantCalls: []string{"add"}},
		{name: "agent error", stdin: conf(""), args: podArgs, agent: fakeAgent{err: errors.New("ambit-node-agent: ztunnel did not ack")},
			wantCalls: []string{"add"}, code: types.ErrInternal, errHas: []string{"pod shop/cart-1 cannot start", "ztunnel did not ack"}},
		{name: "excluded namespace: nobody asked", stdin: conf(`,"excludeNamespaces":["shop"]`), args: podArgs, agent: fakeAgent{err: unreachable}},
		{name: "kube-system excluded by default", stdin: conf(""), args: "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1", agent: fakeAgent{err: unreachable}},
		{name: "not a kubernetes pod", stdin: conf(""), args: "", agent: fakeAgent{err: unreachable}},
		{name: "unreachable, not enrolled", stdin: conf(`,"kubeconfig":"/k"`), args: podArgs, agent: fakeAgent{err: unreachable},
			lookup: &fakeLookup{}, wantCalls: []string{"add"}},
		{name: "unreachable, opted out", stdin: conf(`,"kubeconfig":"/k"`), args: podArgs, agent: fakeAgent{err: unreachable},
			lookup: &fakeLookup{ns: ambientNS, pod: enrol.Pod{Labels: map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeNone}}}, wantCalls: []string{"add"}},
		{name: "unreachable, enrolled", stdin: conf(`,"kubeconfig":"/k"`), args: podArgs, agent: fakeAgent{err: unreachable},
			lookup: &fakeLookup{ns: ambientNS}, wantCalls: []string{"add"}, code: types.ErrTryAgainLater,
			errHas: []string{"pod shop/cart-1 is in the mesh", "ambit-node-agent is not reachable", "cannot start yet (kubelet retries)"}},
		{name: "unreachable, API error", stdin: conf(`,"kubeconfig":"/k"`), args: podArgs, agent: fakeAgent{err: unreachable},
			lookup: &fakeLookup{err: errors.New("connection refused")}, wantCalls: []string{"add"}, code: types.ErrTryAgainLater,
			errHas: []string{"cannot tell whether the pod is in the mesh", "connection refused", "API server is reachable from the node with the kubeconfig /k"}},
		{name: "unreachable, pod not found", stdin: conf(`,"kubeconfig":"/k"`), args: podArgs, agent: fakeAgent{err: unreachable},
			lookup: &fakeLookup{err: fmt.Errorf("%w: pods \"cart-1\" not found", ErrPodNotFound)}, wantCalls: []string{"add"}, code: types.ErrTryAgainLater,
			errHas: []string{"does not exist in the Kubernetes API", "that the pod still exists"}},
		{name: "unreachable, no lookup program", stdin: conf(`,"kubeconfig":"/k"`), args: podArgs, agent: fakeAgent{err: unreachable},
			lookErr: errors.New("cannot find ambit-cni-lookup (looked in /opt/cni/bin)"), wantCalls: []string{"add"}, code: types.ErrTryAgainLater,
			errHas: []string{"cannot find ambit-cni-lookup", "cannot tell whether the pod is in the mesh"}},
		{name: "unreachable, no kubeconfig configured", stdin: conf(""), args: podArgs, agent: fakeAgent{err: unreachable},
			wantCalls: []string{"add"}, code: types.ErrTryAgainLater, errHas: []string{`no "kubeconfig"`}},
		{name: "no prevResult", stdin: []byte(`{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni"}`), args: podArgs,
			code: types.ErrInvalidNetworkConfig, errHas: []string{ErrNotChained}},
		{name: "bad CNI_ARGS", stdin: conf(""), args: "K8S_POD_NAME", code: types.ErrInvalidEnvironmentVariables, errHas: []string{"CNI_ARGS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{agent: &tt.agent, lookup: tt.lookup, lookErr: tt.lookErr}
			err := e.plugin().Add(cmdArgs(tt.stdin, tt.args))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Add: %v", err)
				}
				jsonEqual(t, e.stdout.Bytes(), []byte(prev100))
			} else {
				wantCNIError(t, err, tt.code, tt.errHas...)
				if e.stdout.Len() != 0 {
					t.Errorf("Add failed but printed %q", e.stdout.String())
				}
			}
			if !reflect.DeepEqual(tt.agent.calls, tt.wantCalls) {
				t.Errorf("agent calls = %v, want %v", tt.agent.calls, tt.wantCalls)
			}
			if len(tt.agent.reqs) > 0 {
				want := cniapi.PodRequest{ContainerID: "c1", Netns: "/var/run/netns/cni-1", IfName: "eth0",
					PodNamespace: "shop", PodName: "cart-1", PodUID: "u-1", IPs: []string{"10.244.1.5", "fd00:10:244:1::5"}}
				if !reflect.DeepEqual(tt.agent.reqs[0], want) || tt.agent.socket != "/x.sock" {
					t.Errorf("agent got %+v on %s, want %+v on /x.sock", tt.agent.reqs[0], tt.agent.socket, want)
				}
			}
			wantSrc := LookupSource{Kubeconfig: "/k", Executable: "/opt/cni/bin/ambit-cni", CNIPath: "/opt/cni/bin"}
			if tt.lookup != nil && e.src != wantSrc {
				t.Errorf("lookup built from %+v, want %+v", e.src, wantSrc)
			}
		})
	}
}

func TestAddPrintsAtConfVersion(t *testing.T) {
	tests := []struct{ name, version, prev string }{
		{name: "0.4.0", version: "0.4.0", prev: `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/n"}],"ips":[{"version":"4","interface":0,"address":"10.244.1.5/24"},{"version":"6","interface":0,"address":"fd00::5/64"}]}`},
		{name: "1.1.0", version: "1.1.0", prev: `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/n"}],"ips":[{"interface":0,"address":"10.244.1.5/24"},{"interface":0,"address":"fd00::5/64"}],"dns":{"nameservers":["10.96.0.10"]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{agent: &fakeAgent{resp: cniapi.PodResponse{Enrolled: true}}}
			stdin := []byte(`{"cniVersion":"` + tt.version + `","name":"k8s","type":"ambit-cni","prevResult":` + tt.prev + `}`)
			if err := e.plugin().Add(cmdArgs(stdin, podArgs)); err != nil {
				t.Fatalf("Add: %v", err)
			}
			jsonEqual(t, e.stdout.Bytes(), []byte(tt.prev))
			if got := e.agent.reqs[0].IPs; !reflect.DeepEqual(got, []string{"10.244.1.5", "fd00::5"}) {
				t.Errorf("IPs sent = %v", got)
			}
		})
	}
}

func TestDel(t *testing.T) {
	tests := []struct {
		name      string
		stdin     []byte
		args      string
		netns     string
		agent     fakeAgent
		wantCalls []string
	}{
		{name: "agent told", stdin: conf(""), args: podArgs, netns: "/var/run/netns/cni-1", wantCalls: []string{"del"}},
		{name: "agent down: success", stdin: conf(""), args: podArgs, agent: fakeAgent{err: unreachable}, wantCalls: []string{"del"}},
		{name: "agent error: success", stdin: conf(""), args: podArgs, agent: fakeAgent{err: errors.New("boom")}, wantCalls: []string{"del"}},
		{name: "no prevResult is fine", stdin: []byte(`{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni"}`), args: podArgs, wantCalls: []string{"del"}},
		{name: "bad config: success without asking", stdin: []byte(`{"cniVersion":"1.0.0","name":"k8s","agentTimeout":"x"}`), args: podArgs},
		{name: "excluded namespace", stdin: conf(`,"excludeNamespaces":["shop"]`), args: podArgs},
		{name: "not a kubernetes pod", stdin: conf(""), args: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{agent: &tt.agent}
			a := cmdArgs(tt.stdin, tt.args)
			a.Netns = tt.netns
			if err := e.plugin().Del(a); err != nil {
				t.Fatalf("Del = %v, want success", err)
			}
			if !reflect.DeepEqual(tt.agent.calls, tt.wantCalls) {
				t.Errorf("agent calls = %v, want %v", tt.agent.calls, tt.wantCalls)
			}
			if len(tt.agent.reqs) > 0 && tt.agent.reqs[0].Netns != tt.netns {
				t.Errorf("netns sent = %q, want %q", tt.agent.reqs[0].Netns, tt.netns)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		stdin  []byte
		agent  fakeAgent
		lookup *fakeLookup
		code   uint
		errHas []string
	}{
		{name: "captured", stdin: conf(""), agent: fakeAgent{resp: cniapi.PodResponse{Enrolled: true}}},
		{name: "not captured", stdin: conf(""), agent: fakeAgent{err: errors.New("ambit-node-agent: pod is enrolled but its traffic is not captured")},
			code: types.ErrInternal, errHas: []string{"CHECK of pod shop/cart-1", "not captured"}},
		{name: "unreachable, enrolled", stdin: conf(`,"kubeconfig":"/k"`), agent: fakeAgent{err: unreachable}, lookup: &fakeLookup{ns: ambientNS},
			code: types.ErrTryAgainLater, errHas: []string{"is in the mesh"}},
		{name: "unreachable, not enrolled", stdin: conf(`,"kubeconfig":"/k"`), agent: fakeAgent{err: unreachable}, lookup: &fakeLookup{}},
		{name: "no prevResult", stdin: []byte(`{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni"}`), code: types.ErrInvalidNetworkConfig, errHas: []string{ErrNotChained}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{agent: &tt.agent, lookup: tt.lookup}
			err := e.plugin().Check(cmdArgs(tt.stdin, podArgs))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			wantCNIError(t, err, tt.code, tt.errHas...)
		})
	}
}

func TestStatusAndGCSucceed(t *testing.T) {
	e := &env{agent: &fakeAgent{err: unreachable}}
	p := e.plugin()
	a := cmdArgs([]byte(`{"cniVersion":"1.1.0","name":"k8s","type":"ambit-cni"}`), "")
	if err := p.Status(a); err != nil {
		t.Errorf("Status = %v", err)
	}
	if err := p.GC(a); err != nil {
		t.Errorf("GC = %v", err)
	}
	if len(e.agent.calls) != 0 {
		t.Errorf("agent called: %v", e.agent.calls)
	}
}

func TestDecideWithoutAgent(t *testing.T) {
	ref := PodRef{Namespace: "shop", Name: "cart-1"}
	tests := []struct {
		name      string
		lookup    PodLookup
		lookupErr error
		enrolled  bool
		wantErr   bool
	}{
		{name: "namespace not labelled", lookup: fakeLookup{}, enrolled: false},
		{name: "namespace ambient", lookup: fakeLookup{ns: ambientNS}, enrolled: true},
		{name: "istio sidecar", lookup: fakeLookup{ns: ambientNS, pod: enrol.Pod{Containers: []string{"app", enrol.SidecarContainerName}}}, enrolled: false},
		{name: "lookup fails", lookup: fakeLookup{err: errors.New("forbidden")}, wantErr: true},
		{name: "no lookup", lookupErr: errors.New("no kubeconfig"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enrolled, reason, err := DecideWithoutAgent(context.Background(), tt.lookup, tt.lookupErr, ref)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if enrolled != tt.enrolled || (err == nil && reason == "") {
				t.Errorf("enrolled = %v (%q), want %v", enrolled, reason, tt.enrolled)
			}
		})
	}
}
