//go:build e2e

// Package tests holds the end-to-end suites; they run against a real cluster
// (`make test-e2e` brings one up with ambit-localcluster).
package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"ambit.dev/e2e/framework"
)

// echoReply is what `ambit-testapp serve` answers on HTTP.
type echoReply struct {
	Name  string `json:"name"`
	PodIP string `json:"pod_ip"`
	Peer  string `json:"peer"`
}

// get fetches url from inside the client pod. A freshly created Service is
// programmed by every node's kube-proxy within about a second of its
// endpoints, so the request is retried for a short while.
func get(t *testing.T, f *framework.Framework, ns, client, url string) echoReply {
	t.Helper()
	var out string
	err := f.Eventually(15*time.Second, func() error {
		var err error
		out, _, err = f.Exec(ns, client, "app", "ambit-testapp", "get", "--timeout", "5s", url)
		return err
	})
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, client, err)
	}
	var r echoReply
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Fatalf("GET %s: reply %q is not the test app's JSON: %v", url, out, err)
	}
	return r
}

func peerIP(t *testing.T, peer string) string {
	t.Helper()
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		t.Fatalf("peer %q: %v", peer, err)
	}
	return host
}

// TestClusterCrossNodePodTraffic deploys a server on the first node and a
// client on the second and checks traffic between them, directly and via a
// ClusterIP Service, with the server seeing the client's real pod IP (no NAT
// between pods).
func TestClusterCrossNodePodTraffic(t *testing.T) {
	f := framework.New(t)
	nodes := f.ReadyNodes(2)
	ns := f.Namespace("e2e-cluster", nil)

	server := f.TestApp(ns, "server", framework.AppOptions{Node: nodes[0]})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], Args: []string{"sleep"}})
	svc := f.Service(ns, "server")
	f.WaitEndpoints(ns, svc.Name, 1)
	if server.Spec.NodeName == client.Spec.NodeName {
		t.Fatalf("server and client both on %s", server.Spec.NodeName)
	}

	t.Run("pod IP over HTTP", func(t *testing.T) {
		r := get(t, f, ns, client.Name, fmt.Sprintf("http://%s/", net.JoinHostPort(server.Status.PodIP, fmt.Sprint(framework.HTTPPort))))
		if r.Name != "server" || r.PodIP != server.Status.PodIP {
			t.Errorf("answered by %q (pod_ip %s), want server (%s)", r.Name, r.PodIP, server.Status.PodIP)
		}
		if got := peerIP(t, r.Peer); got != client.Status.PodIP {
			t.Errorf("server saw peer %s, want the client's pod IP %s", got, client.Status.PodIP)
		}
	})
	t.Run("pod IP over TCP", func(t *testing.T) {
		addr := net.JoinHostPort(server.Status.PodIP, fmt.Sprint(framework.TCPPort))
		out, _, err := f.Exec(ns, client.Name, "app", "ambit-testapp", "tcp", "--send", "ping", addr)
		if err != nil {
			t.Fatal(err)
		}
		want := "peer=" + client.Status.PodIP + ":"
		if !strings.Contains(out, want) || !strings.Contains(out, "ping") {
			t.Errorf("tcp exchange output %q: want %q... and the echo", out, want)
		}
	})
	t.Run("ClusterIP service", func(t *testing.T) {
		r := get(t, f, ns, client.Name, fmt.Sprintf("http://%s/", net.JoinHostPort(svc.Spec.ClusterIP, "80")))
		if r.Name != "server" {
			t.Errorf("answered by %q, want server", r.Name)
		}
		if got := peerIP(t, r.Peer); got != client.Status.PodIP {
			t.Errorf("server saw peer %s via the service, want the client's pod IP %s", got, client.Status.PodIP)
		}
	})
	t.Run("same-node ClusterIP service (hairpin through kube-proxy)", func(t *testing.T) {
		local := f.TestApp(ns, "local-client", framework.AppOptions{Node: nodes[0], Args: []string{"sleep"}})
		r := get(t, f, ns, local.Name, fmt.Sprintf("http://%s/", net.JoinHostPort(svc.Spec.ClusterIP, "80")))
		if got := peerIP(t, r.Peer); got != local.Status.PodIP {
			t.Errorf("server saw peer %s, want %s", got, local.Status.PodIP)
		}
	})
}
