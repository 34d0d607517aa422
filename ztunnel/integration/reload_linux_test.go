package integration

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// captured reports whether the ztunnel of the pod's node has listeners
// open for it, per its config_dump.
func (m *mesh) captured(z *ztunnel, uid string) bool {
	for _, w := range m.configDump(z).Workloads {
		if w.UID == uid {
			return w.Captured
		}
	}
	return false
}

func TestPrivilegedWorkloadsFileReload(t *testing.T) {
	m, r := standardMesh(t, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m.startApp(r.web, 8080, shaApp)
	z2 := m.zt[r.web.Node]
	path := filepath.Join(m.dir, r.web.Node.Name+"-workloads.yaml")
	good := readFile(t, path)
	dst := netip.AddrPortFrom(r.web.IP, 8080)
	if _, _, err := m.sendSHA(ctx, r.client, dst, 1024); err != nil {
		t.Fatalf("before reload: %v", err)
	}

	t.Run("a bad file keeps the last good state", func(t *testing.T) {
		writeFile(t, path, []byte("workloads:\n- {uid: broken, addresses: [not-an-ip]}\n"))
		waitFor(t, 10*time.Second, func() bool { return strings.Contains(z2.proc.Output(), "keeping the last good state") },
			"ztunnel did not report the bad file:\n%s", tail(z2.proc.Output(), 2000))
		if _, _, err := m.sendSHA(ctx, r.client, dst, 1024); err != nil {
			t.Fatalf("after a bad file: %v", err)
		}
		if !m.captured(z2, r.web.Name) {
			t.Fatal("pod released after a bad file")
		}
	})

	t.Run("a pod removed from the file is released", func(t *testing.T) {
		// The same file without the pod's netns: node2 must stop capturing it.
		m.released[r.web] = true
		m.workloadsFile(r.web.Node)
		m.released[r.web] = false
		waitFor(t, 10*time.Second, func() bool { return !m.captured(z2, r.web.Name) }, "pod %s still captured", r.web.Name)
		// Its listeners are closed: a mesh client's HBONE tunnel to it fails.
		if got, _, err := m.sendSHA(ctx, r.client, dst, 1024); err == nil {
			t.Fatalf("connection to a released pod succeeded: %+v", got)
		}
	})

	t.Run("a pod added back is captured again", func(t *testing.T) {
		writeFile(t, path, good)
		waitFor(t, 10*time.Second, func() bool { return m.captured(z2, r.web.Name) }, "pod %s not captured again", r.web.Name)
		got, sent, err := m.sendSHA(ctx, r.client, dst, 1024)
		if err != nil || got.Sum != sent || got.ClientIP != r.client.IP {
			t.Fatalf("after re-adding: %+v, %v", got, err)
		}
	})
}
