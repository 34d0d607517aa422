package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// LookupBinary is the name of the program ambit-cni runs to ask the
// Kubernetes API about a pod when the node agent is unreachable
// (cmd/ambit-cni-lookup). It is a separate program so that ambit-cni itself
// does not link client-go, whose package initialisation would otherwise be
// paid on every CNI call.
const LookupBinary = "ambit-cni-lookup"

// Exit codes of ambit-cni-lookup. 0 means it printed a LookupResult.
const (
	// LookupExitUsage: bad arguments or an unusable kubeconfig.
	LookupExitUsage = 2
	// LookupExitAPI: the API server is unreachable, refused the
	// credentials or failed the request.
	LookupExitAPI = 3
	// LookupExitNotFound: the API server says the pod does not exist.
	LookupExitNotFound = 4
)

// LookupResult is the one JSON line ambit-cni-lookup prints on success.
type LookupResult struct {
	Enrolled bool   `json:"enrolled"`
	Reason   string `json:"reason"`
}

// Errors of ExecLookup.Decide, wrapped with the lookup program's message.
var (
	// ErrKubernetesAPI: the API server could not be asked (unreachable,
	// unauthorized, other API error).
	ErrKubernetesAPI = errors.New("the Kubernetes API could not be asked")
	// ErrPodNotFound: the API server says the pod does not exist.
	ErrPodNotFound = errors.New("the pod does not exist in the Kubernetes API")
)

// lookupGrace is how much of the caller's deadline ExecLookup keeps for
// itself: the lookup program gets the rest as its own --timeout, so that it
// reports its own timeout before it is killed.
const lookupGrace = time.Second

// Decider tells whether a pod is in the mesh, without the node agent.
type Decider interface {
	Decide(ctx context.Context, ref PodRef) (enrolled bool, reason string, err error)
}

// LookupDecider applies the enrolment rule to what Lookup reads, in
// process (ambit-cni-lookup uses it; so do tests).
type LookupDecider struct {
	Lookup PodLookup
}

// Decide is DecideWithoutAgent with d.Lookup.
func (d LookupDecider) Decide(ctx context.Context, ref PodRef) (bool, string, error) {
	return DecideWithoutAgent(ctx, d.Lookup, nil, ref)
}

// LookupSource is what the plugin knows when it needs a Decider.
type LookupSource struct {
	// Kubeconfig is the "kubeconfig" of the configuration (never empty).
	Kubeconfig string
	// Binary is the "lookupBinary" of the configuration; empty means
	// FindLookupBinary's default.
	Binary string
	// Executable is the running plugin binary ("" when unknown); CNIPath is
	// CNI_PATH.
	Executable, CNIPath string
}

// ExecLookup is a Decider that runs the ambit-cni-lookup program.
type ExecLookup struct {
	// Binary is the lookup program; Kubeconfig is passed to it.
	Binary, Kubeconfig string
}

var _ Decider = ExecLookup{}

// NewExecLookup finds the lookup program (FindLookupBinary) for src.
func NewExecLookup(src LookupSource) (ExecLookup, error) {
	bin, err := FindLookupBinary(src.Binary, src.Executable, src.CNIPath)
	if err != nil {
		return ExecLookup{}, err
	}
	return ExecLookup{Binary: bin, Kubeconfig: src.Kubeconfig}, nil
}

// FindLookupBinary returns the lookup program: configured when it is set,
// else LookupBinary in the directory of executable (the running plugin),
// else LookupBinary in cniPath (CNI_PATH, a list of directories).
func FindLookupBinary(configured, executable, cniPath string) (string, error) {
	if configured != "" {
		if err := isExecutable(configured); err != nil {
			return "", fmt.Errorf(`the "lookupBinary" %s of the ambit-cni configuration cannot be run: %w`, configured, err)
		}
		return configured, nil
	}
	var tried []string
	if executable != "" {
		p := filepath.Join(filepath.Dir(executable), LookupBinary)
		if isExecutable(p) == nil {
			return p, nil
		}
		tried = append(tried, filepath.Dir(executable))
	}
	for _, dir := range filepath.SplitList(cniPath) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, LookupBinary)
		if isExecutable(p) == nil {
			return p, nil
		}
		tried = append(tried, dir)
	}
	return "", fmt.Errorf("cannot find %s (looked in %s): ambit-node-agent installs it in the CNI bin dir next to ambit-cni; "+
		`check that directory, or set "lookupBinary" in the ambit-cni configuration`, LookupBinary, strings.Join(tried, ", "))
}

func isExecutable(path string) error {
	info, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case !info.Mode().IsRegular():
		return errors.New("not a regular file")
	case info.Mode().Perm()&0o111 == 0:
		return errors.New("not executable")
	}
	return nil
}

// LookupArgs are the arguments ambit-cni-lookup takes.
func LookupArgs(kubeconfig string, ref PodRef, timeout time.Duration) []string {
	return []string{"--kubeconfig", kubeconfig, "--namespace", ref.Namespace, "--name", ref.Name, "--timeout", timeout.String()}
}

// Decide runs the lookup program for ref until ctx ends and reads its
// answer. Its errors wrap ErrPodNotFound or ErrKubernetesAPI when the
// program says so, and carry the program's message.
func (l ExecLookup) Decide(ctx context.Context, ref PodRef) (bool, string, error) {
	timeout := LookupTimeout - lookupGrace
	if deadline, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(deadline)-lookupGrace, lookupGrace)
	}
	cmd := exec.CommandContext(ctx, l.Binary, LookupArgs(l.Kubeconfig, ref, timeout)...)
	cmd.WaitDelay = lookupGrace
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	msg := lastLine(stderr.String())
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return false, "", fmt.Errorf("%s did not answer in time (%v): %s", l.Binary, ctx.Err(), msg)
	case errors.As(err, &exit) && exit.ExitCode() == LookupExitNotFound:
		return false, "", fmt.Errorf("%w: %s", ErrPodNotFound, msg)
	case errors.As(err, &exit) && exit.ExitCode() == LookupExitAPI:
		return false, "", fmt.Errorf("%w: %s", ErrKubernetesAPI, msg)
	case errors.As(err, &exit):
		return false, "", fmt.Errorf("%s failed (%v): %s", l.Binary, err, msg)
	case err != nil:
		return false, "", fmt.Errorf("running %s: %w", l.Binary, err)
	}
	var res LookupResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return false, "", fmt.Errorf("%s printed %q, not a JSON line {\"enrolled\":bool,\"reason\":string}: %w", l.Binary, stdout.String(), err)
	}
	return res.Enrolled, res.Reason, nil
}

// lastLine is the last non-empty line of s (the lookup program's own
// message comes last, after anything a library logged).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return "(no message)"
	}
	return last
}
