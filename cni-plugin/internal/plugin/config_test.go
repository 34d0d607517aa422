package plugin

import (
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"ambit.dev/cni-plugin/internal/cniapi"
)

const prev100 = `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/cni-1"}],` +
	`"ips":[{"interface":1,"address":"10.244.1.5/24","gateway":"10.244.1.1"},{"interface":1,"address":"fd00:10:244:1::5/64"}]}`

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name   string
		stdin  string
		check  func(t *testing.T, c Config)
		code   uint
		errHas string
	}{
		{
			name:  "defaults",
			stdin: `{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni","prevResult":` + prev100 + `}`,
			check: func(t *testing.T, c Config) {
				if c.AgentSocket != cniapi.DefaultSocketPath || c.AgentTimeout != DefaultAgentTimeout || c.Kubeconfig != "" || c.LookupBinary != "" ||
					!slices.Equal(c.ExcludeNamespaces, []string{"kube-system"}) || c.LogLevel != slog.LevelInfo {
					t.Errorf("defaults: %+v", c)
				}
				if c.Net.PrevResult == nil || c.Result == nil || len(c.Result.IPs) != 2 {
					t.Errorf("prevResult not parsed: %+v", c.Result)
				}
			},
		},
		{
			name: "every field",
			stdin: `{"cniVersion":"0.4.0","name":"k8s","type":"ambit-cni","agentSocket":"/run/a.sock","agentTimeout":"2s",` +
				`"kubeconfig":"/etc/cni/net.d/kc","lookupBinary":"/opt/cni/bin/ambit-cni-lookup","excludeNamespaces":["a","b"],"logLevel":"debug"}`,
			check: func(t *testing.T, c Config) {
				if c.AgentSocket != "/run/a.sock" || c.AgentTimeout != 2*time.Second || c.Kubeconfig != "/etc/cni/net.d/kc" ||
					c.LookupBinary != "/opt/cni/bin/ambit-cni-lookup" ||
					!slices.Equal(c.ExcludeNamespaces, []string{"a", "b"}) || c.LogLevel != slog.LevelDebug {
					t.Errorf("fields: %+v", c)
				}
				if c.Net.PrevResult != nil || c.Result != nil {
					t.Errorf("no prevResult given, got %+v", c.Result)
				}
			},
		},
		{
			name:  "empty excludeNamespaces excludes nothing",
			stdin: `{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni","excludeNamespaces":[]}`,
			check: func(t *testing.T, c Config) {
				if len(c.ExcludeNamespaces) != 0 {
					t.Errorf("excludeNamespaces = %v, want none", c.ExcludeNamespaces)
				}
			},
		},
		{name: "not JSON", stdin: `{"cniVersion":`, code: types.ErrDecodingFailure, errHas: "not valid JSON"},
		{name: "agentTimeout not a duration", stdin: `{"name":"k","agentTimeout":"thirty"}`, code: types.ErrInvalidNetworkConfig, errHas: `invalid "agentTimeout"`},
		{name: "agentTimeout a number", stdin: `{"name":"k","agentTimeout":30}`, code: types.ErrDecodingFailure, errHas: "agentTimeout"},
		{name: "agentTimeout too short", stdin: `{"name":"k","agentTimeout":"500ms"}`, code: types.ErrInvalidNetworkConfig, errHas: "outside 1s..2m0s"},
		{name: "agentTimeout too long", stdin: `{"name":"k","agentTimeout":"3m"}`, code: types.ErrInvalidNetworkConfig, errHas: "outside 1s..2m0s"},
		{name: "relative agentSocket", stdin: `{"name":"k","agentSocket":"cni.sock"}`, code: types.ErrInvalidNetworkConfig, errHas: `invalid "agentSocket"`},
		{name: "relative kubeconfig", stdin: `{"name":"k","kubeconfig":"kc"}`, code: types.ErrInvalidNetworkConfig, errHas: `invalid "kubeconfig"`},
		{name: "relative lookupBinary", stdin: `{"name":"k","lookupBinary":"ambit-cni-lookup"}`, code: types.ErrInvalidNetworkConfig, errHas: `invalid "lookupBinary"`},
		{name: "empty namespace excluded", stdin: `{"name":"k","excludeNamespaces":[""]}`, code: types.ErrInvalidNetworkConfig, errHas: `invalid "excludeNamespaces"`},
		{name: "bad logLevel", stdin: `{"name":"k","logLevel":"loud"}`, code: types.ErrInvalidNetworkConfig, errHas: `invalid "logLevel"`},
		{name: "bad prevResult", stdin: `{"cniVersion":"1.0.0","name":"k","prevResult":{"ips":"10.0.0.1"}}`, code: types.ErrDecodingFailure, errHas: `"prevResult"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.stdin))
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("ParseConfig error = %v, want a *types.Error", err)
			}
			if cniErr.Code != tt.code || !strings.Contains(cniErr.Msg, tt.errHas) {
				t.Errorf("ParseConfig error = code %d %q, want code %d containing %q", cniErr.Code, cniErr.Msg, tt.code, tt.errHas)
			}
		})
	}
}

func TestParsePodRef(t *testing.T) {
	tests := []struct {
		name    string
		args    string
		want    PodRef
		ok      bool
		wantErr bool
	}{
		{name: "containerd", args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
			want: PodRef{Namespace: "shop", Name: "cart-1", UID: "u-1"}, ok: true},
		{name: "no uid", args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1", want: PodRef{Namespace: "shop", Name: "cart-1"}, ok: true},
		{name: "unknown keys without IgnoreUnknown", args: "FOO=bar;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1",
			want: PodRef{Namespace: "shop", Name: "cart-1"}, ok: true},
		{name: "not kubernetes", args: "", ok: false},
		{name: "namespace only", args: "K8S_POD_NAMESPACE=shop", want: PodRef{Namespace: "shop"}, ok: false},
		{name: "malformed", args: "K8S_POD_NAMESPACE", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParsePodRef(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParsePodRef err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParsePodRef = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestPodIPs(t *testing.T) {
	ipc := func(iface *int, cidr string) *current.IPConfig {
		ip, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return &current.IPConfig{Interface: iface, Address: *n}
	}
	ifaces := []*current.Interface{{Name: "veth1"}, {Name: "eth0", Sandbox: "/var/run/netns/p"}}
	tests := []struct {
		name string
		res  *current.Result
		want []string
	}{
		{name: "nil", res: nil, want: nil},
		{name: "IPv4 and IPv6 in the pod", res: &current.Result{Interfaces: ifaces, IPs: []*current.IPConfig{
			ipc(current.Int(1), "10.244.1.5/24"), ipc(current.Int(1), "fd00::5/64")}}, want: []string{"10.244.1.5", "fd00::5"}},
		{name: "host-side address left out", res: &current.Result{Interfaces: ifaces, IPs: []*current.IPConfig{
			ipc(current.Int(0), "169.254.1.1/32"), ipc(current.Int(1), "10.244.1.5/24"), ipc(current.Int(0), "fe80::1/64")}}, want: []string{"10.244.1.5"}},
		{name: "no interfaces: all", res: &current.Result{IPs: []*current.IPConfig{
			ipc(nil, "10.244.1.5/24"), ipc(nil, "fd00::5/64")}}, want: []string{"10.244.1.5", "fd00::5"}},
		{name: "index out of range: all", res: &current.Result{Interfaces: ifaces, IPs: []*current.IPConfig{
			ipc(current.Int(7), "10.244.1.5/24")}}, want: []string{"10.244.1.5"}},
		{name: "duplicates once", res: &current.Result{IPs: []*current.IPConfig{
			ipc(nil, "fd00::5/64"), ipc(nil, "fd00::5/128")}}, want: []string{"fd00::5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PodIPs(tt.res); !slices.Equal(got, tt.want) {
				t.Errorf("PodIPs = %v, want %v", got, tt.want)
			}
		})
	}
}
