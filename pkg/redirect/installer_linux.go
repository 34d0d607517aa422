package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// lockWaitSeconds bounds how long iptables-restore waits for the xtables
// lock (legacy backend) held by another writer on the node.
const lockWaitSeconds = 10

// Installer applies, checks and removes a Plan inside pod network
// namespaces. It keeps no per-pod state, so a restarted node agent can
// reconcile from what the namespaces hold. Safe for concurrent use on
// different namespaces.
//
// Per IP family it runs one iptables-save to read the netns's mangle and nat
// tables, decides from it and the plan (applyScript, removeScript,
// checkProblems), and writes the difference, if any, with one
// iptables-restore --noflush: at most 2 programs per family for Apply and
// Remove, 1 for Check.
type Installer struct {
	log      *slog.Logger
	lookPath func(string) (string, error)
	// run runs an iptables program; tests wrap it to count execs.
	run func(*exec.Cmd) error
}

// NewInstaller returns an Installer that logs to log.
func NewInstaller(log *slog.Logger) *Installer {
	return &Installer{log: log.With("component", "redirect"), lookPath: exec.LookPath, run: (*exec.Cmd).Run}
}

// Status is what Check found in a netns.
type Status struct {
	// Problems lists what is missing or differs from the plan, one
	// human-readable line each; empty when everything is in place.
	Problems []string
}

// Installed reports whether the netns holds exactly the planned rules.
func (s Status) Installed() bool { return len(s.Problems) == 0 }

// Apply installs the rules for cfg in the network namespace at netnsPath
// (e.g. /var/run/netns/cni-…, or /proc/<pid>/ns/net). It is idempotent:
// applying the same Config again changes nothing; rules that drifted are
// repaired.
func (in *Installer) Apply(ctx context.Context, netnsPath string, cfg Config) error {
	plan, err := Build(cfg)
	if err != nil {
		return err
	}
	tools, err := in.tools(plan.Config)
	if err != nil {
		return err
	}
	changes := 0
	err = inNetns(netnsPath, func() error {
		for _, f := range plan.Config.Families {
			saved, err := in.save(ctx, tools[f])
			if err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
			script, n := applyScript(plan, f, saved)
			if script == "" {
				continue
			}
			if err := in.restore(ctx, tools[f], script); err != nil {
				return fmt.Errorf("%v rules: %w (does the kernel have the match/target modules?)", f, err)
			}
			in.log.Debug("wrote rules", "family", f, "changes", n)
			changes += n
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply redirection in netns %s: %w", netnsPath, err)
	}
	err = withHandle(netnsPath, func(h *netlink.Handle) error {
		for _, rt := range plan.Routes {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := in.applyRoute(h, rt)
			changes += n
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply redirection routes in netns %s: %w", netnsPath, err)
	}
	in.log.Info("redirection applied", "netns", netnsPath, "changes", changes)
	return nil
}

// Check reports whether the rules for cfg are in place in the netns, without
// changing anything. The node agent calls it to decide whether to re-Apply.
func (in *Installer) Check(ctx context.Context, netnsPath string, cfg Config) (Status, error) {
	plan, err := Build(cfg)
	if err != nil {
		return Status{}, err
	}
	tools, err := in.tools(plan.Config)
	if err != nil {
		return Status{}, err
	}
	var st Status
	err = inNetns(netnsPath, func() error {
		for _, f := range plan.Config.Families {
			saved, err := in.save(ctx, tools[f])
			if err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
			problems, err := checkProblems(plan, f, saved, in.exists(tools[f], f))
			if err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
			st.Problems = append(st.Problems, problems...)
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("check redirection in netns %s: %w", netnsPath, err)
	}
	err = withHandle(netnsPath, func(h *netlink.Handle) error {
		for _, rt := range plan.Routes {
			problems, err := checkRoute(h, rt)
			if err != nil {
				return err
			}
			st.Problems = append(st.Problems, problems...)
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("check redirection routes in netns %s: %w", netnsPath, err)
	}
	return st, nil
}

// Remove deletes everything Ambit installed in the netns for cfg's families
// and backend: every chain named AMBIT_*, every jump to one, and the ip
// rules and routes of cfg's mark and table. Nothing else is touched.
// Removing from a netns that has none of it is not an error.
func (in *Installer) Remove(ctx context.Context, netnsPath string, cfg Config) error {
	plan, err := Build(cfg)
	if err != nil {
		return err
	}
	tools, err := in.tools(plan.Config)
	if err != nil {
		return err
	}
	removed := 0
	err = inNetns(netnsPath, func() error {
		for _, f := range plan.Config.Families {
			saved, err := in.save(ctx, tools[f])
			if err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
			script, n := removeScript(saved)
			if script == "" {
				continue
			}
			if err := in.restore(ctx, tools[f], script); err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
			removed += n
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove redirection from netns %s: %w", netnsPath, err)
	}
	err = withHandle(netnsPath, func(h *netlink.Handle) error {
		for _, rt := range plan.Routes {
			n, err := removeRoute(h, rt)
			removed += n
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove redirection routes from netns %s: %w", netnsPath, err)
	}
	in.log.Info("redirection removed", "netns", netnsPath, "removed", removed)
	return nil
}

// familyTools are the paths of one family's iptables programs.
type familyTools struct {
	cmd, save, restore string
}

// tools resolves the iptables programs of each family, failing with a clear
// error when the node lacks one.
func (in *Installer) tools(c Config) (map[Family]familyTools, error) {
	out := map[Family]familyTools{}
	for _, f := range c.Families {
		cmd, save, err := c.Backend.Binaries(f)
		if err != nil {
			return nil, err
		}
		restore, err := c.Backend.RestoreBinary(f)
		if err != nil {
			return nil, err
		}
		var paths [3]string
		for i, name := range []string{cmd, save, restore} {
			paths[i], err = in.lookPath(name)
			if err != nil {
				return nil, fmt.Errorf("iptables backend %q for %v needs %s, which is not in PATH (install the iptables package in the node agent image, or set Config.Backend to one the node has): %w",
					c.Backend, f, name, err)
			}
		}
		out[f] = familyTools{cmd: paths[0], save: paths[1], restore: paths[2]}
	}
	return out, nil
}

// save runs iptables-save in the current netns and parses its output.
func (in *Installer) save(ctx context.Context, t familyTools) (savedState, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, t.save)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := in.run(cmd); err != nil {
		return savedState{}, fmt.Errorf("%s: %w: %s", t.save, err, strings.TrimSpace(stderr.String()))
	}
	s, err := parseSave(stdout.String())
	if err != nil {
		return savedState{}, fmt.Errorf("read %s output: %w", t.save, err)
	}
	return s, nil
}

// restore feeds script to iptables-restore --noflush in the current netns.
func (in *Installer) restore(ctx context.Context, t familyTools, script string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, t.restore, "--noflush", fmt.Sprintf("--wait=%d", lockWaitSeconds))
	cmd.Stdin, cmd.Stderr = strings.NewReader(script), &stderr
	if err := in.run(cmd); err != nil {
		in.log.Debug("iptables-restore input", "restore", t.restore, "script", script)
		return fmt.Errorf("%s --noflush: %w: %s", t.restore, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// exists returns Check's fallback for a rule whose saved text differs from
// the plan: `iptables -C` through go-iptables, which compares rules as the
// kernel holds them. Nothing is exec'd unless it is called.
func (in *Installer) exists(t familyTools, f Family) ruleExists {
	var ipt *iptables.IPTables
	return func(r Rule) (bool, error) {
		if ipt == nil {
			proto := iptables.ProtocolIPv4
			if f == IPv6 {
				proto = iptables.ProtocolIPv6
			}
			var err error
			ipt, err = iptables.New(iptables.Path(t.cmd), iptables.IPFamily(proto), iptables.Timeout(lockWaitSeconds))
			if err != nil {
				return false, fmt.Errorf("run %s: %w", t.cmd, err)
			}
		}
		ok, err := ipt.Exists(r.Table, r.Chain, r.Spec()...)
		if err != nil {
			return false, fmt.Errorf("check rule in %s/%s: %w", r.Table, r.Chain, err)
		}
		return ok, nil
	}
}

// withHandle runs fn with a netlink handle whose sockets live in the netns.
func withHandle(netnsPath string, fn func(h *netlink.Handle) error) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w (is the pod still running?)", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", netnsPath, err)
	}
	defer h.Close()
	return fn(h)
}

func nlFamily(f Family) int {
	if f == IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func (rt PolicyRoute) nlRule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = nlFamily(rt.Family)
	r.Mark = rt.Mark
	mask := rt.Mask
	r.Mask = &mask
	r.Table = rt.Table
	r.Priority = rt.Priority
	return r
}

func (rt PolicyRoute) nlRoute(h *netlink.Handle) (*netlink.Route, error) {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	pfx := defaultPrefix(rt.Family)
	return &netlink.Route{
		Family:    nlFamily(rt.Family),
		LinkIndex: lo.Attrs().Index,
		Dst:       &net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(0, pfx.Addr().BitLen())},
		Table:     rt.Table,
		Type:      unix.RTN_LOCAL,
		Scope:     unix.RT_SCOPE_HOST,
	}, nil
}

func findRules(h *netlink.Handle, rt PolicyRoute, withPriority bool) ([]netlink.Rule, error) {
	mask := uint64(netlink.RT_FILTER_MARK | netlink.RT_FILTER_MASK | netlink.RT_FILTER_TABLE)
	if withPriority {
		mask |= netlink.RT_FILTER_PRIORITY
	}
	rules, err := h.RuleListFiltered(nlFamily(rt.Family), rt.nlRule(), mask)
	if err != nil {
		return nil, fmt.Errorf("list %v ip rules: %w", rt.Family, err)
	}
	return rules, nil
}

func findLocalRoutes(h *netlink.Handle, rt PolicyRoute) ([]netlink.Route, error) {
	routes, err := h.RouteListFiltered(nlFamily(rt.Family),
		&netlink.Route{Table: rt.Table, Type: unix.RTN_LOCAL},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	if err != nil {
		return nil, fmt.Errorf("list %v routes of table %d: %w", rt.Family, rt.Table, err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if r.Dst == nil {
			out = append(out, r)
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			out = append(out, r)
		}
	}
	return out, nil
}

func (in *Installer) applyRoute(h *netlink.Handle, rt PolicyRoute) (int, error) {
	changes := 0
	rules, err := findRules(h, rt, true)
	if err != nil {
		return 0, err
	}
	if len(rules) == 0 {
		if err := h.RuleAdd(rt.nlRule()); err != nil {
			return 0, fmt.Errorf("%s: %w", rt.RuleCommand(), err)
		}
		in.log.Debug("added ip rule", "rule", rt.RuleCommand())
		changes++
	}
	routes, err := findLocalRoutes(h, rt)
	if err != nil {
		return changes, err
	}
	if len(routes) == 0 {
		route, err := rt.nlRoute(h)
		if err != nil {
			return changes, err
		}
		if err := h.RouteAdd(route); err != nil {
			return changes, fmt.Errorf("%s: %w (is lo up in the pod netns?)", rt.RouteCommand(), err)
		}
		in.log.Debug("added route", "route", rt.RouteCommand())
		changes++
	}
	return changes, nil
}

func checkRoute(h *netlink.Handle, rt PolicyRoute) ([]string, error) {
	var problems []string
	rules, err := findRules(h, rt, true)
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		problems = append(problems, fmt.Sprintf("%v: missing %q", rt.Family, rt.RuleCommand()))
	}
	routes, err := findLocalRoutes(h, rt)
	if err != nil {
		return nil, err
	}
	if len(routes) == 0 {
		problems = append(problems, fmt.Sprintf("%v: missing %q", rt.Family, rt.RouteCommand()))
	}
	return problems, nil
}

func removeRoute(h *netlink.Handle, rt PolicyRoute) (int, error) {
	removed := 0
	rules, err := findRules(h, rt, false)
	if err != nil {
		return 0, err
	}
	for i := range rules {
		if err := h.RuleDel(&rules[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return removed, fmt.Errorf("delete %v ip rule %v: %w", rt.Family, rules[i], err)
		}
		removed++
	}
	routes, err := findLocalRoutes(h, rt)
	if err != nil {
		return removed, err
	}
	for i := range routes {
		if err := h.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			return removed, fmt.Errorf("delete %v route %v: %w", rt.Family, routes[i], err)
		}
		removed++
	}
	return removed, nil
}
