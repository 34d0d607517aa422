package cniserver

import (
	"context"
	"strings"
	"testing"
	"time"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/netns/podnstest"
	"ambit.dev/cni-plugin/internal/zdsserver/zdstest"
	"ambit.dev/pkg/netnstest"
	"ambit.dev/pkg/redirect"
)

const privPrefix = "ambitcs-"

func TestPrivilegedCNIAddCapturesTheSandbox(t *testing.T) {
	netnstest.RemoveStale(privPrefix)
	netnstest.RequireRoot(t, "ip", "iptables", "ip6tables")
	sb := podnstest.New(t, privPrefix,
		podnstest.Addr{CIDR: "10.99.10.2/24", Gateway: "10.99.10.1"},
		podnstest.Addr{CIDR: "fd00:99:10::2/64", Gateway: "fd00:99:10::1"})
	inst := redirect.NewInstaller(discard())
	e := startWith(t, 10*time.Second, inst, netns.NewScanner(discard()), namespace("demo", true), newPod("demo", "web"))
	z := zdstest.Dial(t, e.zsock, nil)

	// The runtime's path, as the plugin (this process) sees it; /var/run
	// is a symlink to /run.
	req := cniapi.PodRequest{
		ContainerID: "sandbox-1", Netns: "/var/run/netns/" + sb.Name, IfName: "eth0",
		PodNamespace: "demo", PodName: "web", PodUID: "uid-web",
		IPs: []string{sb.IPs[0].String(), sb.IPs[1].String()},
	}
	resp, err := e.cni.Add(ctxT(t), req)
	if err != nil || !resp.Enrolled {
		t.Fatalf("Add = %+v, %v", resp, err)
	}
	if m := z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web")); m.Ino != ino(sb.Path) {
		t.Fatalf("ztunnel got %+v, want the sandbox's netns (inode %d)", m, ino(sb.Path))
	}
	cfg := redirect.Config{Families: []redirect.Family{redirect.IPv4, redirect.IPv6}, ProbeSourceIPs: sb.Gateways}
	if st, err := inst.Check(context.Background(), sb.Path, cfg); err != nil || !st.Installed() {
		t.Fatalf("rules after ADD: %+v, %v", st, err)
	}
	if _, err := e.cni.Check(ctxT(t), req); err != nil {
		t.Fatalf("Check of the captured sandbox: %v", err)
	}

	// The rules are removed behind the agent's back: CHECK says so.
	if err := inst.Remove(context.Background(), sb.Path, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cni.Check(ctxT(t), req); err == nil || !strings.Contains(err.Error(), "not in place") {
		t.Fatalf("Check without rules = %v", err)
	}

	if _, err := e.cni.Del(ctxT(t), req); err != nil {
		t.Fatal(err)
	}
	z.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-web"))
	if len(e.agent.Captured()) != 0 {
		t.Fatal("DEL left the sandbox captured")
	}
}
