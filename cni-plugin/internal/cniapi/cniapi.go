// Package cniapi is the protocol between the ambit-cni plugin and the node
// agent on the same node: JSON over HTTP on a Unix socket (default
// /var/run/ambit/cni.sock, in the hostPath directory the node agent and
// ztunnel share).
//
//	POST /v1/pods/add    PodRequest -> 200 PodResponse | error
//	POST /v1/pods/del    PodRequest -> 200 PodResponse | error
//	POST /v1/pods/check  PodRequest -> 200 PodResponse | error
//
// An error is any non-200 status with an ErrorResponse body; its message is
// what the plugin returns to the container runtime, so it says what to check.
//
// The agent identifies the caller by the Unix socket's peer credentials
// (SO_PEERCRED): it opens the netns path through /proc/<peer pid>/root, so
// the path is resolved in the plugin's own mount namespace.
package cniapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// DefaultSocketPath is where the node agent listens.
const DefaultSocketPath = "/var/run/ambit/cni.sock"

// Paths of the three calls.
const (
	PathAdd   = "/v1/pods/add"
	PathDel   = "/v1/pods/del"
	PathCheck = "/v1/pods/check"
)

// PodRequest describes the pod a CNI call is about.
type PodRequest struct {
	// ContainerID is CNI_CONTAINERID (the sandbox id).
	ContainerID string `json:"containerID"`
	// Netns is CNI_NETNS, a path in the plugin's mount namespace (may be
	// empty on DEL).
	Netns string `json:"netns,omitempty"`
	// IfName is CNI_IFNAME.
	IfName string `json:"ifName,omitempty"`
	// PodNamespace, PodName and PodUID come from CNI_ARGS (K8S_POD_*);
	// PodUID may be empty (older runtimes do not pass it).
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	PodUID       string `json:"podUID,omitempty"`
	// IPs are the pod's addresses from the previous plugin's result.
	IPs []string `json:"ips,omitempty"`
}

// PodResponse answers a PodRequest.
type PodResponse struct {
	// Enrolled is whether the pod is in the mesh; for add, an enrolled pod's
	// traffic is captured and ztunnel acked it when the response is sent.
	Enrolled bool `json:"enrolled"`
	// Reason says why the pod is (not) enrolled, for logs.
	Reason string `json:"reason,omitempty"`
}

// ErrorResponse is the body of every non-200 answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ErrUnreachable wraps every error that means the agent could not be asked
// at all (no socket, connection refused): the plugin then decides on its own
// whether the pod may start.
var ErrUnreachable = errors.New("ambit-node-agent is not reachable")

// Client calls the node agent.
type Client struct {
	http       *http.Client
	socketPath string
}

// NewClient returns a client of the agent listening on socketPath; every
// call is bounded by timeout.
func NewClient(socketPath string, timeout time.Duration) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}
	return &Client{http: &http.Client{Transport: tr, Timeout: timeout}, socketPath: socketPath}
}

// Add asks the agent to set the pod up; it returns when the pod is captured
// and acked by ztunnel, or is not enrolled.
func (c *Client) Add(ctx context.Context, req PodRequest) (PodResponse, error) {
	return c.call(ctx, PathAdd, req)
}

// Del tells the agent the pod's sandbox is going away.
func (c *Client) Del(ctx context.Context, req PodRequest) (PodResponse, error) {
	return c.call(ctx, PathDel, req)
}

// Check asks the agent whether an enrolled pod is still captured.
func (c *Client) Check(ctx context.Context, req PodRequest) (PodResponse, error) {
	return c.call(ctx, PathCheck, req)
}

func (c *Client) call(ctx context.Context, path string, req PodRequest) (PodResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return PodResponse{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ambit-node-agent"+path, bytes.NewReader(body))
	if err != nil {
		return PodResponse{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hreq)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return PodResponse{}, fmt.Errorf("%w at %s (is the ambit-node-agent pod running on this node?): %v", ErrUnreachable, c.socketPath, err)
		}
		return PodResponse{}, fmt.Errorf("ambit-node-agent at %s: %w", c.socketPath, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return PodResponse{}, fmt.Errorf("ambit-node-agent at %s: reading the answer: %w", c.socketPath, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
		}
		return PodResponse{}, fmt.Errorf("ambit-node-agent: %s", e.Error)
	}
	var out PodResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return PodResponse{}, fmt.Errorf("ambit-node-agent at %s: bad answer %q: %w", c.socketPath, data, err)
	}
	return out, nil
}
