package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Down removes everything the recorded state lists: processes (and every
// process left in the cluster's cgroups, e.g. containers), firewall rules,
// routes, links, cgroups, host directories it created and the state dir.
// Node namespaces need no step of their own: they belong to the node
// processes and disappear with the last of them.
// It works after a crash of Up and is safe to run twice.
func (c *Cluster) Down(ctx context.Context) error {
	st := c.state
	if st == nil {
		var err error
		st, err = LoadState(c.cfg.StateDir)
		if errors.Is(err, os.ErrNotExist) {
			// Nothing recorded; still sweep the cgroups in case the state
			// file was lost.
			if err := killCgroup(c.cfg.cgroupBase(), 30*time.Second); err != nil {
				return err
			}
			return removeCgroupTree(c.cfg.cgroupBase())
		}
		if err != nil {
			return err
		}
	}
	var errs []error
	// Kubelets first so they do not restart what we kill next.
	for _, p := range st.Processes {
		if strings.HasSuffix(p.Name, "-kubelet") && alive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	if err := killCgroup(c.cfg.cgroupBase(), 60*time.Second); err != nil {
		errs = append(errs, err)
	}
	for _, p := range st.Processes {
		if alive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	for _, r := range st.IPTables {
		if _, err := c.run(ctx, "iptables", append([]string{"-t", r.Table, "-D", r.Chain}, r.Spec...)...); err != nil && !strings.Contains(err.Error(), "does a matching rule exist") && !strings.Contains(err.Error(), "Bad rule") {
			errs = append(errs, err)
		}
	}
	for _, r := range st.Routes {
		if _, err := c.run(ctx, "ip", append([]string{"route", "del"}, r...)...); err != nil && !strings.Contains(err.Error(), "No such process") {
			errs = append(errs, err)
		}
	}
	for i := len(st.Links) - 1; i >= 0; i-- {
		if _, err := c.run(ctx, "ip", "link", "del", st.Links[i]); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	// Processes may take a moment to leave their cgroups after SIGKILL.
	if err := waitFor(ctx, 10*time.Second, "cgroup removal", func() error {
		return removeCgroupTree(c.cfg.cgroupBase())
	}); err != nil {
		errs = append(errs, err)
	}
	dirs := append([]string(nil), st.HostDirs...)
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove %s (created by up): %w", d, err))
		}
	}
	if len(errs) > 0 {
		// Keep the state file so a second Down can retry.
		return fmt.Errorf("down left something behind (state kept in %s; run down again): %w", StatePath(c.cfg.StateDir), errors.Join(errs...))
	}
	if m, err := mountsUnder(st.StateDir); err != nil || len(m) > 0 {
		return fmt.Errorf("mounts remain under %s: %v %v (unmount them, then run down again)", st.StateDir, m, err)
	}
	if err := os.RemoveAll(st.StateDir); err != nil {
		return fmt.Errorf("remove %s: %w", st.StateDir, err)
	}
	c.state = nil
	c.log.Info("cluster down", "name", c.cfg.Name)
	return nil
}

// mountsUnder lists host mount points below dir.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}
