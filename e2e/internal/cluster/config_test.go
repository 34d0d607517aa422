package cluster

import (
	"os"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Config{Name: "ambit", Nodes: 2, StateDir: "/var/lib/x"}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"upper case name", func(c *Config) { c.Name = "Ambit" }, "lower-case"},
		{"name too long for interface names", func(c *Config) { c.Name = "abcdefghi" }, "1-8"},
		{"zero nodes", func(c *Config) { c.Nodes = 0 }, "1 to 9"},
		{"ten nodes", func(c *Config) { c.Nodes = 10 }, "1 to 9"},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestNamesFitInterfaceNames(t *testing.T) {
	c := Config{Name: "abcdefgh", Nodes: 9}
	for _, n := range []string{c.bridgeName(), c.vethHost(9)} {
		if len(n) > 15 {
			t.Errorf("link name %q is %d characters; Linux allows 15", n, len(n))
		}
	}
}

// The harness runs the Kubernetes version that e2e/k8sbuild pins.
func TestK8sVersionMatchesWrapperModule(t *testing.T) {
	b, err := os.ReadFile("../../k8sbuild/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "k8s.io/kubernetes "+K8sVersion) {
		t.Fatalf("e2e/k8sbuild/go.mod does not pin k8s.io/kubernetes %s; update K8sVersion or the wrapper module", K8sVersion)
	}
}

func TestRenderedConfigs(t *testing.T) {
	kubelet, err := render(kubeletTmpl, map[string]any{"NodeIP": NodeIP(1), "CgroupRoot": "/ambit-x/node1", "CAFile": "/pki/ca.crt", "ResolvConf": "/r"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"address: 10.200.0.11", "cgroupRoot: /ambit-x/node1", "failCgroupV1: false", "clientCAFile: /pki/ca.crt"} {
		if !strings.Contains(string(kubelet), want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, kubelet)
		}
	}
	cni, err := render(cniTmpl, map[string]any{"PodCIDR": "10.244.3.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cni), `"subnet": "10.244.3.0/24"`) || !strings.Contains(string(cni), `"ipMasq": false`) {
		t.Errorf("CNI config:\n%s", cni)
	}
}
