package kube

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// PortForwarder reaches a port of a pod's network namespace through the
// apiserver (POST pods/<pod>/portforward, SPDY), as kubectl port-forward
// does, and GETs an HTTP path there. It implements ztunneladmin.Getter.
type PortForwarder struct {
	config *rest.Config
	typed  kubernetes.Interface
}

// NewPortForwarder returns a PortForwarder using config's credentials.
func NewPortForwarder(config *rest.Config, typed kubernetes.Interface) *PortForwarder {
	return &PortForwarder{config: config, typed: typed}
}

// Get forwards a local loopback port to port of the pod for the duration
// of one HTTP GET of path, and returns the body of a 200 answer. Everything
// it starts has stopped when it returns.
func (p *PortForwarder) Get(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error) {
	transport, upgrader, err := spdy.RoundTripperFor(p.config)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
	}
	url := p.typed.CoreV1().RESTClient().Post().Namespace(namespace).Resource("pods").Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)

	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut lockedBuffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			<-done
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		stopped = true
		close(stop)
		return nil, fmt.Errorf("port-forward to pod %s/%s failed (is the pod running? may you create pods/portforward in namespace %s?): %w", namespace, pod, namespace, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, ctx.Err())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		return nil, fmt.Errorf("port-forward to pod %s/%s: no local port: %v", namespace, pod, err)
	}
	return p.get(ctx, namespace, pod, port, int(ports[0].Local), path, &errOut)
}

func (p *PortForwarder) get(ctx context.Context, namespace, pod string, port, local int, path string, errOut *lockedBuffer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(local)+path, nil)
	if err != nil {
		return nil, err
	}
	// One request, no keep-alive: the forwarded connection closes with it.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		detail := strings.TrimSpace(errOut.String())
		if detail != "" {
			err = fmt.Errorf("%w (%s)", err, detail)
		}
		return nil, fmt.Errorf("GET %s on port %d of pod %s/%s through port-forward: %w: is ztunnel listening there (kubectl -n %s logs %s)?",
			path, port, namespace, pod, err, namespace, pod)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the answer of pod %s/%s to GET %s: %w", namespace, pod, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pod %s/%s port %d answered %s to GET %s (is ambitctl as new as ztunnel?): %s",
			namespace, pod, port, resp.Status, path, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// lockedBuffer collects the port-forwarder's error output, written from
// its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
