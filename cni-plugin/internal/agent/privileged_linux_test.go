package agent

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/netns/podnstest"
	"ambit.dev/cni-plugin/internal/zdsserver/zdstest"
	"ambit.dev/pkg/enrol"
	"ambit.dev/pkg/netnstest"
	"ambit.dev/pkg/redirect"
)

const privPrefix = "ambitag-"

// newPrivilegedEnv is an env with the real rule installer and netns scanner
// on client.
func newPrivilegedEnv(t *testing.T, client *fake.Clientset) *env {
	t.Helper()
	e := &env{t: t, client: client}
	return e.build(redirect.NewInstaller(discard()), netns.NewScanner(discard()))
}

// jumps counts the jump rules to Ambit's chains in the netns (one per
// built-in chain and family when installed once).
func jumps(t *testing.T, name string) int {
	t.Helper()
	n := 0
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command("ip", "netns", "exec", name, save).CombinedOutput()
		if err != nil {
			t.Fatalf("%s in %s: %v\n%s", save, name, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "-A ") && !strings.HasPrefix(l, "-A AMBIT_") && strings.Contains(l, "-j AMBIT_") {
				n++
			}
		}
	}
	return n
}

func TestPrivilegedCaptureRestartAndRelease(t *testing.T) {
	netnstest.RemoveStale(privPrefix)
	netnstest.RequireRoot(t, "ip", "iptables", "ip6tables", "iptables-save", "ip6tables-save")
	sb := podnstest.New(t, privPrefix,
		podnstest.Addr{CIDR: "10.99.9.2/24", Gateway: "10.99.9.1"},
		podnstest.Addr{CIDR: "fd00:99:9::2/64", Gateway: "fd00:99:9::1"})
	ips := []string{sb.IPs[0].String(), sb.IPs[1].String()}
	client := fake.NewClientset(namespace("demo", false), pod("demo", "web", node, ips...))
	nsIno := inoOf(sb.Path)
	inst := redirect.NewInstaller(discard())
	cfg := redirect.Config{Families: []redirect.Family{redirect.IPv4, redirect.IPv6}, ProbeSourceIPs: sb.Gateways}
	ctx := context.Background()

	// Labelling the namespace captures the running pod.
	e := newPrivilegedEnv(t, client)
	e.run()
	z := e.ztunnel(nil)
	e.setNamespaceLabel("demo", true)
	if m := z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web")); m.Ino != nsIno || m.FDs != 1 {
		t.Fatalf("ztunnel got %+v, want the pod's netns (inode %d)", m, nsIno)
	}
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
	if st, err := inst.Check(ctx, sb.Path, cfg); err != nil || !st.Installed() {
		t.Fatalf("rules after capture: %+v, %v", st, err)
	}
	installedJumps := jumps(t, sb.Name)
	if installedJumps == 0 {
		t.Fatal("no jump rule to Ambit's chains in the pod netns")
	}

	// The agent restarts: it finds the netns again by scanning, re-applies
	// without duplicating anything, and hands it to ztunnel again.
	e.cancel()
	e.wg.Wait()
	z.Close()
	e2 := newPrivilegedEnv(t, client)
	e2.run()
	z2 := e2.ztunnel(nil)
	if m := z2.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web")); m.Ino != nsIno {
		t.Fatalf("after restart ztunnel got %+v, want inode %d", m, nsIno)
	}
	e2.waitUntil("the restarted agent holds the netns", func() bool { return len(e2.agent.Captured()) == 1 })
	if st, err := inst.Check(ctx, sb.Path, cfg); err != nil || !st.Installed() {
		t.Fatalf("rules after restart: %+v, %v", st, err)
	}
	if n := jumps(t, sb.Name); n != installedJumps {
		t.Fatalf("after restart the netns has %d jumps to Ambit's chains, want %d (no duplicates)", n, installedJumps)
	}

	// Removing the label removes the rules and tells ztunnel.
	e2.setNamespaceLabel("demo", false)
	z2.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-web"))
	e2.waitAnnotation("demo", "web", "")
	if st, err := inst.Check(ctx, sb.Path, cfg); err != nil || st.Installed() {
		t.Fatalf("rules after release: %+v, %v; want none", st, err)
	}
	if n := jumps(t, sb.Name); n != 0 {
		t.Fatalf("after release the netns still has %d jumps to Ambit's chains", n)
	}
}
