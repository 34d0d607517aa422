package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestConflist(t *testing.T) {
	for _, tc := range []struct {
		name      string
		spec      chainSpec
		wantTypes []string
		wantV6    bool
	}{
		{"baseline IPv4", chainSpec{IPAMDir: "/tmp/ipam"}, []string{"bridge", "portmap"}, false},
		{"with ambit-cni IPv4", chainSpec{IPAMDir: "/tmp/ipam", AgentSocket: "/tmp/x/cni.sock"}, []string{"bridge", "portmap", "ambit-cni"}, false},
		{"with ambit-cni dual stack", chainSpec{IPAMDir: "/tmp/ipam", AgentSocket: "/tmp/x/cni.sock", DualStack: true}, []string{"bridge", "portmap", "ambit-cni"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := conflist(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			list, err := libcni.ConfListFromBytes(b)
			if err != nil {
				t.Fatalf("libcni refuses the list: %v\n%s", err, b)
			}
			if list.Name != networkName || list.CNIVersion != "1.0.0" {
				t.Errorf("name %q version %q", list.Name, list.CNIVersion)
			}
			var types []string
			for _, p := range list.Plugins {
				types = append(types, p.Network.Type)
			}
			if !slices.Equal(types, tc.wantTypes) {
				t.Errorf("plugins %v, want %v", types, tc.wantTypes)
			}
			if got := strings.Contains(string(b), subnet6); got != tc.wantV6 {
				t.Errorf("IPv6 range present = %v, want %v\n%s", got, tc.wantV6, b)
			}
			if !strings.Contains(string(b), subnet4) {
				t.Errorf("no IPv4 range:\n%s", b)
			}
		})
	}
}
