package testtopo

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// maxOutput bounds the output a Process keeps: past it, the oldest half is
// dropped.
const maxOutput = 8 << 20

// Process is a command running inside a topology netns, in its own process
// group. Its stdout and stderr are captured (the last 8 MiB).
type Process struct {
	// Name is the command line, for logs.
	Name string

	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // valid after done is closed
}

// Start runs argv inside the netns at netnsPath. The process is stopped
// when ctx is done, by Stop, or at Close.
func (t *Topology) Start(ctx context.Context, netnsPath string, argv ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("start: empty command")
	}
	return t.StartCmd(ctx, netnsPath, exec.Command(argv[0], argv[1:]...))
}

// StartCmd is Start for a prepared, not yet started command (to set Env,
// Dir or Stdin). If cmd.Stdout or cmd.Stderr is nil it goes to the
// captured output. The command runs through nsenter --net=<netnsPath>,
// which execs it: Pid is the command's own pid.
func (t *Topology) StartCmd(ctx context.Context, netnsPath string, cmd *exec.Cmd) (*Process, error) {
	if cmd.Process != nil {
		return nil, errors.New("start: command already started")
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, errors.New("start: topology is closed")
	}
	path := cmd.Path
	if cmd.Err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), cmd.Err)
	}
	p := &Process{Name: strings.Join(cmd.Args, " "), out: &tailBuffer{}, done: make(chan struct{})}
	wrapped := exec.Command("nsenter", append([]string{"--net=" + netnsPath, "--", path}, cmd.Args[1:]...)...)
	wrapped.Env, wrapped.Dir, wrapped.Stdin = cmd.Env, cmd.Dir, cmd.Stdin
	wrapped.Stdout, wrapped.Stderr = cmd.Stdout, cmd.Stderr
	if wrapped.Stdout == nil {
		wrapped.Stdout = p.out
	}
	if wrapped.Stderr == nil {
		wrapped.Stderr = p.out
	}
	wrapped.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd = wrapped
	if err := wrapped.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", p.Name, netnsPath, err)
	}
	go func() {
		p.err = wrapped.Wait()
		close(p.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = p.Stop(5 * time.Second)
		case <-p.done:
		}
	}()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = p.Stop(time.Second)
		return nil, errors.New("start: topology closed while starting")
	}
	t.procs = append(t.procs, p)
	t.mu.Unlock()
	t.log.Debug("process started", "cmd", p.Name, "pid", p.Pid(), "netns", netnsPath)
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed (nil for exit status 0).
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the process to exit, at most timeout, and returns its
// exit error.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// Stop sends SIGTERM to the process group, waits up to grace, then sends
// SIGKILL to the group and waits for the exit. It returns the exit error.
func (p *Process) Stop(grace time.Duration) error {
	pgid := p.cmd.Process.Pid // Setpgid: the group id is the leader's pid
	if !p.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Children of the process may outlive it in its group: kill them too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	// SIGKILL is delivered asynchronously: wait (bounded) until the group
	// is gone, so the netns can be deleted with nothing left inside.
	for i := 0; i < 200 && syscall.Kill(-pgid, 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return p.err
}

// logProcesses writes the tail of every process's output to the test log.
func (t *Topology) logProcesses(tb testing.TB) {
	t.mu.Lock()
	procs := append([]*Process(nil), t.procs...)
	t.mu.Unlock()
	for _, p := range procs {
		out := p.Output()
		if len(out) > 64<<10 {
			out = "...\n" + out[len(out)-64<<10:]
		}
		tb.Logf("output of %s (pid %d):\n%s", p.Name, p.Pid(), out)
	}
}

// tailBuffer is a concurrency-safe buffer keeping the last maxOutput bytes.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > maxOutput {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-maxOutput/2:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
