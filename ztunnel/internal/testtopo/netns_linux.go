package testtopo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"

	"ambit.dev/pkg/redirect"
	"ambit.dev/ztunnel/internal/socket"
)

// handle returns an open handle on the netns at path, cached until Close.
func (t *Topology) handle(path string) (*socket.Netns, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("topology is closed")
	}
	if h, ok := t.handles[path]; ok {
		return h, nil
	}
	h, err := socket.OpenNetns(path)
	if err != nil {
		return nil, err
	}
	t.handles[path] = h
	return h, nil
}

// Netns returns the topology's open handle on the netns at path (for
// ambit.dev/ztunnel/internal/socket calls). It stays valid until Close;
// do not close it.
func (t *Topology) Netns(path string) (*socket.Netns, error) { return t.handle(path) }

// Do runs fn on an OS thread switched into the netns at netnsPath (and
// back). Sockets fn creates live in that netns; goroutines fn starts do not
// run there.
func (t *Topology) Do(netnsPath string, fn func() error) error {
	h, err := t.handle(netnsPath)
	if err != nil {
		return err
	}
	return h.Do(fn)
}

// Listen opens a TCP listener inside the netns at netnsPath (network "tcp",
// "tcp4" or "tcp6"; addr a literal "ip:port" or ":port"). Close closes it
// if the caller has not.
func (t *Topology) Listen(netnsPath, network, addr string) (net.Listener, error) {
	h, err := t.handle(netnsPath)
	if err != nil {
		return nil, err
	}
	ln, err := socket.ListenInNetns(context.Background(), h, network, addr, socket.Options{})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.listeners = append(t.listeners, ln)
	t.mu.Unlock()
	return ln, nil
}

// Dial opens a TCP connection from inside the netns at netnsPath to addr (a
// literal "ip:port"). The caller closes it.
func (t *Topology) Dial(ctx context.Context, netnsPath, network, addr string) (*net.TCPConn, error) {
	h, err := t.handle(netnsPath)
	if err != nil {
		return nil, err
	}
	return socket.DialInNetns(ctx, h, network, addr, socket.DialOptions{})
}

// Exec runs argv inside the netns at netnsPath (nsenter --net) and returns
// its combined output; the error includes the output.
func (t *Topology) Exec(ctx context.Context, netnsPath string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: empty command")
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath, "--"}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in %s: %s: %w: %s", netnsPath, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// RedirectConfig returns the redirect.Config InstallRedirect uses: the
// defaults (ports 15001/15006/15008, mark 0x539) for the topology's
// families.
func (t *Topology) RedirectConfig() redirect.Config {
	fams := []redirect.Family{redirect.IPv4}
	if t.opts.IPv6 {
		fams = append(fams, redirect.IPv6)
	}
	return redirect.Config{Families: fams}
}

// InstallRedirect applies ztunnel's real in-pod redirection rules
// (ambit.dev/pkg/redirect with RedirectConfig) in the pod's netns, as the
// CNI node agent does when a pod joins the mesh.
func (t *Topology) InstallRedirect(ctx context.Context, pod *Pod) error {
	if err := redirect.NewInstaller(t.log).Apply(ctx, pod.NetnsPath, t.RedirectConfig()); err != nil {
		return fmt.Errorf("install redirection in pod %s: %w", pod.Name, err)
	}
	return nil
}

// RemoveRedirect removes what InstallRedirect installed in the pod's netns.
func (t *Topology) RemoveRedirect(ctx context.Context, pod *Pod) error {
	if err := redirect.NewInstaller(t.log).Remove(ctx, pod.NetnsPath, t.RedirectConfig()); err != nil {
		return fmt.Errorf("remove redirection from pod %s: %w", pod.Name, err)
	}
	return nil
}
