package zds

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
)

// pair returns both ends of a real SOCK_SEQPACKET connection.
func pair(t *testing.T) (agent, ztunnel *Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "zds.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	ztunnel, err = Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	agent = <-accepted
	if agent == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { agent.Close(); ztunnel.Close() })
	return agent, ztunnel
}

func TestExchangeWithDescriptor(t *testing.T) {
	agent, zt := pair(t)
	if err := zt.SendHello(); err != nil {
		t.Fatal(err)
	}
	if err := agent.RecvHello(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	add := &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Add{Add: &zdsv1alpha1.AddWorkload{
		Uid: "uid-1", WorkloadInfo: &zdsv1alpha1.WorkloadInfo{Name: "web", Namespace: "demo", ServiceAccount: "web"}}}}
	if err := agent.SendRequest(add, f); err != nil {
		t.Fatal(err)
	}
	req, fds, err := zt.RecvRequest()
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 1 {
		t.Fatalf("got %d descriptors, want 1", len(fds))
	}
	defer fds[0].Close()
	var want, got unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &want); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(fds[0].Fd()), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Fatalf("received descriptor is another file (ino %d, want %d)", got.Ino, want.Ino)
	}
	if req.GetAdd().GetUid() != "uid-1" || req.GetAdd().GetWorkloadInfo().GetServiceAccount() != "web" {
		t.Fatalf("request = %v", req)
	}
	for _, nack := range []string{"", "cannot bind 15008"} {
		if err := zt.SendAck(nack); err != nil {
			t.Fatal(err)
		}
		got, err := agent.RecvAck()
		if err != nil || got != nack {
			t.Fatalf("RecvAck = %q, %v; want %q", got, err, nack)
		}
	}
}

func TestProtocolErrors(t *testing.T) {
	t.Run("hello with the wrong version", func(t *testing.T) {
		agent, zt := pair(t)
		if err := zt.send(&zdsv1alpha1.ZdsHello{}, nil); err != nil {
			t.Fatal(err)
		}
		if err := agent.RecvHello(); err == nil || !strings.Contains(err.Error(), "version") {
			t.Fatalf("RecvHello = %v, want a version error", err)
		}
	})
	t.Run("oversized datagram is truncated", func(t *testing.T) {
		agent, zt := pair(t)
		if _, err := agent.c.Write(make([]byte, MaxMessage+1)); err != nil {
			t.Fatal(err)
		}
		if _, fds, err := zt.RecvRequest(); err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("RecvRequest = %v (%d fds), want truncated", err, len(fds))
		}
	})
	t.Run("garbage does not decode", func(t *testing.T) {
		agent, zt := pair(t)
		if _, err := agent.c.Write([]byte{0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := zt.RecvRequest(); err == nil || !strings.Contains(err.Error(), "decode") {
			t.Fatalf("RecvRequest = %v, want a decode error", err)
		}
	})
	t.Run("peer closed", func(t *testing.T) {
		agent, zt := pair(t)
		agent.Close()
		if _, _, err := zt.RecvRequest(); err == nil {
			t.Fatal("RecvRequest after close succeeded")
		}
	})
	t.Run("response without ack", func(t *testing.T) {
		agent, zt := pair(t)
		if err := zt.send(&zdsv1alpha1.WorkloadResponse{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := agent.RecvAck(); err == nil {
			t.Fatal("RecvAck of an empty response succeeded")
		}
	})
	t.Run("listen refuses a non-socket path", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path); err == nil {
			t.Fatal("Listen over a regular file succeeded")
		}
	})
}
