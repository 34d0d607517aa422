package kube

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	kubeletpf "k8s.io/kubelet/pkg/cri/streaming/portforward"
)

// podPorts is the kubelet side of a port-forward: it connects a stream to
// a port of "the pod", here loopback listeners of the test.
type podPorts map[int32]string // port -> address to dial

func (p podPorts) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	addr, ok := p[port]
	if !ok {
		return fmt.Errorf("nothing listens on port %d", port)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{})
	go func() { io.Copy(stream, conn); close(done) }()
	io.Copy(conn, stream)
	conn.(*net.TCPConn).CloseWrite()
	<-done
	return nil
}

// fakeAPIServer serves pods/portforward for the pods in pods with the
// kubelet's own port-forward server, and 404 for anything else.
func fakeAPIServer(t *testing.T, pods map[string]podPorts) (*rest.Config, func()) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name, ports := range pods {
			if r.Method == http.MethodPost && r.URL.Path == "/api/v1/namespaces/ambit-system/pods/"+name+"/portforward" {
				kubeletpf.ServePortForward(w, r, ports, name, "", nil, time.Minute, 30*time.Second, kubeletpf.SupportedProtocols)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods not found","reason":"NotFound","code":404}`)
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}, srv.Close
}

func TestPortForwardGet(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/certs":
			fmt.Fprint(w, `[{"identity":"spiffe://cluster.local/ns/demo/sa/client","state":"Valid"}]`)
		default:
			http.Error(w, "no such endpoint", http.StatusNotFound)
		}
	}))
	defer admin.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	cfg, closeAPIServer := fakeAPIServer(t, map[string]podPorts{
		"ztunnel-a":    {15000: strings.TrimPrefix(admin.URL, "http://")},
		"ztunnel-down": {15000: closedAddr},
	})
	typed, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pf := NewPortForwarder(cfg, typed)

	tests := []struct {
		name, pod, path string
		want, wantErr   string
	}{
		{"admin answer", "ztunnel-a", "/certs", `[{"identity":"spiffe://cluster.local/ns/demo/sa/client","state":"Valid"}]`, ""},
		{"admin 404", "ztunnel-a", "/nope", "", "pod ambit-system/ztunnel-a port 15000 answered 404 Not Found to GET /nope (is ambitctl as new as ztunnel?): no such endpoint"},
		{"no such pod", "ztunnel-x", "/certs", "", "port-forward to pod ambit-system/ztunnel-x failed (is the pod running? may you create pods/portforward in namespace ambit-system?)"},
		{"ztunnel not listening", "ztunnel-down", "/certs", "", "GET /certs on port 15000 of pod ambit-system/ztunnel-down through port-forward"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			got, err := pf.Get(ctx, "ambit-system", tc.pod, 15000, tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Get = %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("Get = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	admin.Close()
	closeAPIServer()
	// Get stops its port-forward before returning: once the test servers
	// are closed, nothing is left.
	goleak.VerifyNone(t)
}
