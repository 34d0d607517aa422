package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const cgroupRoot = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup v1 hierarchies (directories
// under /sys/fs/cgroup, e.g. cpu, memory, pids, systemd) and the cgroup2
// "unified" mount of the hybrid layout, which runc also populates.
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && (fields[2] == "cgroup" || fields[2] == "cgroup2") && strings.HasPrefix(fields[1], cgroupRoot+"/") {
			out = append(out, fields[1])
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup v1 hierarchies are mounted under /sys/fs/cgroup; this harness needs the cgroup v1 (or hybrid) layout")
	}
	return out, sc.Err()
}

// ensureCgroup creates the cgroup path (e.g. /ambit-x/node1) in every v1
// hierarchy, copying cpuset.cpus/mems from the parent so tasks can join.
func (c *Cluster) ensureCgroup(path string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	// Record every level so Down removes what we made, deepest first.
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := range parts {
		p := "/" + strings.Join(parts[:i+1], "/")
		if err := c.state.addCgroup(p); err != nil {
			return err
		}
		for _, h := range hs {
			dir := filepath.Join(h, p)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			if filepath.Base(h) == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					cur, _ := os.ReadFile(filepath.Join(dir, f))
					if len(bytes.TrimSpace(cur)) > 0 {
						continue
					}
					v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
					if err != nil {
						return fmt.Errorf("read parent %s: %w", f, err)
					}
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						return fmt.Errorf("set %s/%s: %w", dir, f, err)
					}
				}
			}
		}
	}
	return nil
}

// procsFiles returns the cgroup.procs files of path in every hierarchy.
func procsFiles(path string) ([]string, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, filepath.Join(h, path, "cgroup.procs"))
	}
	return out, nil
}

// launch starts a detached daemon inside cgroup cg. The shell writes its own
// PID into the cgroup before exec'ing, so no child can escape it. ns is the
// nsenter prefix (empty for host daemons).
func (c *Cluster) launch(name, cg string, ns []string, bin string, args ...string) error {
	procs, err := procsFiles(cg)
	if err != nil {
		return err
	}
	logPath := filepath.Join(c.cfg.logDir(), name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	script := `for f in $AMBIT_CGPROCS; do echo $$ > "$f" || exit 97; done; exec "$@"`
	argv := append([]string{"-c", script, name}, ns...)
	argv = append(argv, bin)
	argv = append(argv, args...)
	cmd := exec.Command("/bin/sh", argv...)
	cmd.Env = append(os.Environ(), "AMBIT_CGPROCS="+strings.Join(procs, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	ticks, _ := startTicks(pid)
	// Reap it in the background if it dies while we are still running, so
	// alive() sees the death instead of a zombie.
	go func() { _ = cmd.Wait() }()
	c.log.Info("started", "daemon", name, "pid", pid, "log", logPath)
	return c.state.record(func(s *State) {
		s.Processes = append(s.Processes, Process{Name: name, PID: pid, StartTicks: ticks, Log: logPath})
	})
}

// startTicks reads the process start time (clock ticks since boot).
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive reports whether a recorded process still runs (and is ours).
func alive(p Process) bool {
	t, err := startTicks(p.PID)
	if err != nil {
		return false
	}
	if p.StartTicks != 0 && t != p.StartTicks {
		return false
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 && b[i+2] == 'Z' {
		return false
	}
	return true
}

// cgroupTasks lists every PID in the cgroup subtree (pids hierarchy, or the
// first hierarchy found).
func cgroupTasks(path string) ([]int, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, h := range hs {
		root := filepath.Join(h, path)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, l := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(l); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out, nil
}

// killCgroup SIGKILLs everything in the subtree until it is empty.
func killCgroup(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := cgroupTasks(path)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in cgroup %s survived SIGKILL for %s (stuck in D state? check `cat /proc/PID/stack`)", pids, path, timeout)
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroupTree removes path and every sub-cgroup in every hierarchy,
// deepest first.
func removeCgroupTree(path string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, path)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
