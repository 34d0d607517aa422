package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/pkg/netnstest"
)

// refPlugins is where Debian's containernetworking-plugins puts the
// reference plugins.
const refPlugins = "/usr/lib/cni"

// inNetns runs f on a thread that has joined the named netns. The thread
// stays locked and dies with its goroutine, so nothing else ever runs in
// that netns; the root netns is never changed. Processes f starts (the CNI
// plugins) inherit the thread's netns.
func inNetns(t *testing.T, name string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		h, err := netns.GetFromPath(netnstest.Path(name))
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// TestPrivilegedChain runs a real chain, bridge + host-local followed by
// ambit-cni, through libcni (as containerd does) in a "host" netns the
// test creates, for pods in netns the test creates, against a fake agent.
func TestPrivilegedChain(t *testing.T) {
	netnstest.RequireRoot(t, "ip")
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(refPlugins, p)); err != nil {
			t.Fatalf("this test needs the reference CNI plugin %s in %s (apt-get install containernetworking-plugins): %v", p, refPlugins, err)
		}
	}
	host := netnstest.New(t, "ambcnih")
	pod1 := netnstest.New(t, "ambcnip")
	pod2 := netnstest.New(t, "ambcnip")
	agent := startAgent(t, cniapi.PodResponse{Enrolled: true, Reason: "namespace shop is ambient"})
	dir := shortDir(t)

	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "ambtst",
  "plugins": [
    {"type": "bridge", "bridge": "ambtst0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": "10.254.77.0/24"}], [{"subnet": "fd00:254:77::/64"}]]}},
    {"type": "ambit-cni", "agentSocket": %q, "agentTimeout": "10s"}
  ]
}`, filepath.Join(dir, "ipam"), agent.socket)
	list, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(pluginBin), refPlugins}, filepath.Join(dir, "cache"), nil)
	rt := func(id, podNetns, name string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: netnstest.Path(podNetns), IfName: "eth0", Args: [][2]string{
			{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}, {"K8S_POD_UID", "uid-" + name}}}
	}
	rt1, rt2 := rt("ambtst-1", pod1, "cart-1"), rt("ambtst-2", pod2, "cart-2")
	ctx := context.Background()
	// Whatever happens, remove the attachments (deleting the netns would
	// also do, but DEL releases the host-local leases too).
	t.Cleanup(func() {
		for _, r := range []*libcni.RuntimeConf{rt1, rt2} {
			_ = inNetns(t, host, func() error { return cni.DelNetworkList(ctx, list, r) })
		}
	})

	// ADD: the pod gets its address from bridge + host-local, ambit-cni
	// hands it to the agent and passes the result through.
	var res *current.Result
	err = inNetns(t, host, func() error {
		r, err := cni.AddNetworkList(ctx, list, rt1)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.Address.IP.String())
	}
	if len(ips) != 2 || !strings.HasPrefix(ips[0], "10.254.77.") || !strings.HasPrefix(ips[1], "fd00:254:77::") {
		t.Fatalf("ADD result IPs = %v, want one from 10.254.77.0/24 and one from fd00:254:77::/64", ips)
	}
	calls, reqs := agent.recorded()
	want := cniapi.PodRequest{ContainerID: "ambtst-1", Netns: netnstest.Path(pod1), IfName: "eth0",
		PodNamespace: "shop", PodName: "cart-1", PodUID: "uid-cart-1", IPs: ips}
	if !slices.Equal(calls, []string{cniapi.PathAdd}) || !reflect.DeepEqual(reqs[0], want) {
		t.Fatalf("agent got %v %+v, want add %+v", calls, reqs, want)
	}
	addrs := netnstest.Run(t, "ip", "-n", pod1, "-o", "addr", "show", "dev", "eth0")
	for _, ip := range ips {
		if !strings.Contains(addrs, ip+"/") {
			t.Errorf("eth0 in the pod netns lacks %s:\n%s", ip, addrs)
		}
	}
	// The bridge is in the test's host netns, not in the root netns.
	netnstest.Run(t, "ip", "-n", host, "link", "show", "ambtst0")
	if _, err := net.InterfaceByName("ambtst0"); err == nil {
		t.Errorf("bridge ambtst0 was created in the root netns")
	}

	// CHECK passes while the agent says the pod is captured, fails when not.
	if err := inNetns(t, host, func() error { return cni.CheckNetworkList(ctx, list, rt1) }); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	agent.setError(cniapi.PathCheck, "pod shop/cart-1 is enrolled but its traffic is not captured")
	err = inNetns(t, host, func() error { return cni.CheckNetworkList(ctx, list, rt1) })
	if err == nil || !strings.Contains(err.Error(), "not captured") {
		t.Errorf("CHECK with an uncaptured pod = %v, want the agent's error", err)
	}

	// ADD fails when the agent cannot set the pod up: the pod must not
	// start unprotected. The runtime then DELs, which succeeds.
	agent.setError(cniapi.PathAdd, "ztunnel did not ack pod shop/cart-2")
	err = inNetns(t, host, func() error { _, err := cni.AddNetworkList(ctx, list, rt2); return err })
	if err == nil || !strings.Contains(err.Error(), "ztunnel did not ack pod shop/cart-2") {
		t.Errorf("ADD with an agent error = %v, want the agent's error", err)
	}
	if err := inNetns(t, host, func() error { return cni.DelNetworkList(ctx, list, rt2) }); err != nil {
		t.Errorf("DEL after a failed ADD: %v", err)
	}

	// DEL succeeds with the agent down, and the primary plugin's DEL ran.
	agent.stop()
	if err := inNetns(t, host, func() error { return cni.DelNetworkList(ctx, list, rt1) }); err != nil {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	if out, err := exec.Command("ip", "-n", pod1, "link", "show", "eth0").CombinedOutput(); err == nil {
		t.Errorf("eth0 still in the pod netns after DEL:\n%s", out)
	}
	calls, _ = agent.recorded()
	if want := []string{cniapi.PathAdd, cniapi.PathCheck, cniapi.PathCheck, cniapi.PathAdd, cniapi.PathDel}; !slices.Equal(calls, want) {
		t.Errorf("agent calls = %v, want %v", calls, want)
	}
}
