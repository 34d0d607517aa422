package redirect

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
)

// BenchmarkPrivilegedApply times Installer.Apply on a fresh pod netns per
// iteration (creating and deleting the netns is not timed), as the node
// agent does on a pod's CNI ADD. Run it as root with a fixed count, e.g.
//
//	go test -run '^$' -bench BenchmarkPrivilegedApply -benchtime 30x ./redirect
func BenchmarkPrivilegedApply(b *testing.B) {
	requireRoot(b)
	probes := []netip.Addr{probeV4, probeV6}
	cases := []struct {
		name string
		cfg  Config
	}{
		{"IPv4", Config{Families: []Family{IPv4}, ProbeSourceIPs: probes}},
		{"dual-stack", Config{ProbeSourceIPs: probes}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			in := testInstaller(b)
			for i := range b.N {
				b.StopTimer()
				name := fmt.Sprintf("%sbench%d-%d", nsPrefix, os.Getpid(), i)
				run(b, "ip", "netns", "add", name)
				b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
				run(b, "ip", "-n", name, "link", "set", "lo", "up")
				b.StartTimer()

				if err := in.Apply(ctx, nsPath(name), tc.cfg); err != nil {
					b.Fatalf("Apply: %v", err)
				}

				b.StopTimer()
				if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
					b.Fatalf("delete netns %s: %v\n%s", name, err, out)
				}
				b.StartTimer()
			}
		})
	}
}
