package redirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// lockWaitSeconds bounds how long an iptables call waits for the xtables
// lock (legacy backend) held by another writer on the node.
const lockWaitSeconds = 10

// Installer applies, checks and removes a Plan inside pod network
// namespaces. It keeps no per-pod state, so a restarted node agent can
// reconcile from what the namespaces hold. Safe for concurrent use on
// different namespaces.
type Installer struct {
	log      *slog.Logger
	lookPath func(string) (string, error)
}

// NewInstaller returns an Installer that logs to log.
func NewInstaller(log *slog.Logger) *Installer {
	return &Installer{log: log.With("component", "redirect"), lookPath: exec.LookPath}
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
			ipt, err := newIPTables(tools[f], f)
			if err != nil {
				return err
			}
			n, err := in.applyFamily(ctx, ipt, plan, f)
			changes += n
			if err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
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
			if err := ctx.Err(); err != nil {
				return err
			}
			ipt, err := newIPTables(tools[f], f)
			if err != nil {
				return err
			}
			problems, err := checkFamily(ipt, plan, f)
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
			if err := ctx.Err(); err != nil {
				return err
			}
			ipt, err := newIPTables(tools[f], f)
			if err != nil {
				return err
			}
			n, err := removeFamily(ipt)
			removed += n
			if err != nil {
				return fmt.Errorf("%v rules: %w", f, err)
			}
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

// tools resolves the iptables binary of each family, failing with a clear
// error when the node lacks one.
func (in *Installer) tools(c Config) (map[Family]string, error) {
	out := map[Family]string{}
	for _, f := range c.Families {
		cmd, _, err := c.Backend.Binaries(f)
		if err != nil {
			return nil, err
		}
		path, err := in.lookPath(cmd)
		if err != nil {
			return nil, fmt.Errorf("iptables backend %q for %v needs %s, which is not in PATH (install the iptables package in the node agent image, or set Config.Backend to one the node has): %w",
				c.Backend, f, cmd, err)
		}
		out[f] = path
	}
	return out, nil
}

func newIPTables(path string, f Family) (*iptables.IPTables, error) {
	proto := iptables.ProtocolIPv4
	if f == IPv6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.Path(path), iptables.IPFamily(proto), iptables.Timeout(lockWaitSeconds))
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", path, err)
	}
	return ipt, nil
}

func (in *Installer) applyFamily(ctx context.Context, ipt *iptables.IPTables, p Plan, f Family) (int, error) {
	changes := 0
	for _, ch := range p.Chains {
		if ch.Family != f {
			continue
		}
		if err := ctx.Err(); err != nil {
			return changes, err
		}
		ok, err := ipt.ChainExists(ch.Table, ch.Name)
		if err != nil {
			return changes, fmt.Errorf("list chains of table %s: %w (is the %s table available in the kernel?)", ch.Table, err, ch.Table)
		}
		if !ok {
			if err := ipt.NewChain(ch.Table, ch.Name); err != nil {
				return changes, fmt.Errorf("create chain %s/%s: %w", ch.Table, ch.Name, err)
			}
			in.log.Debug("created chain", "family", f, "table", ch.Table, "chain", ch.Name)
			changes++
		}
		want := rulesOf(p.Rules, f, ch.Table, ch.Name)
		same, err := chainMatches(ipt, ch, want)
		if err != nil {
			return changes, err
		}
		if same {
			continue
		}
		// Rewrite the chain. Before the jump exists (first install) nothing
		// passes through it; on repair there is a short window in which the
		// chain is incomplete.
		if err := ipt.ClearChain(ch.Table, ch.Name); err != nil {
			return changes, fmt.Errorf("flush chain %s/%s: %w", ch.Table, ch.Name, err)
		}
		for _, r := range want {
			if err := ipt.Append(r.Table, r.Chain, r.Spec()...); err != nil {
				return changes, fmt.Errorf("iptables -t %s -A %s %s: %w (does the kernel have the match/target modules?)",
					r.Table, r.Chain, strings.Join(r.Spec(), " "), err)
			}
		}
		in.log.Debug("wrote chain", "family", f, "table", ch.Table, "chain", ch.Name, "rules", len(want))
		changes++
	}
	for _, j := range p.Jumps {
		if j.Family != f {
			continue
		}
		ids, exact, err := jumpState(ipt, j)
		if err != nil {
			return changes, err
		}
		if len(ids) == 1 && exact {
			continue
		}
		if err := deleteByIDs(ipt, j.Table, j.Chain, ids); err != nil {
			return changes, err
		}
		if err := ipt.Insert(j.Table, j.Chain, 1, j.Spec()...); err != nil {
			return changes, fmt.Errorf("insert jump %s/%s -> %s: %w", j.Table, j.Chain, jumpTarget(j), err)
		}
		in.log.Debug("inserted jump", "family", f, "table", j.Table, "chain", j.Chain, "target", jumpTarget(j))
		changes++
	}
	return changes, nil
}

func checkFamily(ipt *iptables.IPTables, p Plan, f Family) ([]string, error) {
	var problems []string
	missingChain := map[string]bool{}
	for _, ch := range p.Chains {
		if ch.Family != f {
			continue
		}
		ok, err := ipt.ChainExists(ch.Table, ch.Name)
		if err != nil {
			return nil, fmt.Errorf("list chains of table %s: %w", ch.Table, err)
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%v: chain %s/%s missing", f, ch.Table, ch.Name))
			missingChain[ch.Table+"/"+ch.Name] = true
			continue
		}
		same, err := chainMatches(ipt, ch, rulesOf(p.Rules, f, ch.Table, ch.Name))
		if err != nil {
			return nil, err
		}
		if !same {
			problems = append(problems, fmt.Sprintf("%v: chain %s/%s differs from the plan", f, ch.Table, ch.Name))
		}
	}
	for _, j := range p.Jumps {
		if j.Family != f {
			continue
		}
		if missingChain[j.Table+"/"+jumpTarget(j)] {
			problems = append(problems, fmt.Sprintf("%v: jump %s/%s -> %s missing", f, j.Table, j.Chain, jumpTarget(j)))
			continue
		}
		ids, exact, err := jumpState(ipt, j)
		if err != nil {
			return nil, err
		}
		switch {
		case len(ids) == 0 || !exact:
			problems = append(problems, fmt.Sprintf("%v: jump %s/%s -> %s missing", f, j.Table, j.Chain, jumpTarget(j)))
		case len(ids) > 1:
			problems = append(problems, fmt.Sprintf("%v: %d jumps %s/%s -> %s, want 1", f, len(ids), j.Table, j.Chain, jumpTarget(j)))
		}
	}
	return problems, nil
}

// removeFamily deletes every jump to an AMBIT_* chain and every AMBIT_*
// chain in the mangle and nat tables.
func removeFamily(ipt *iptables.IPTables) (int, error) {
	removed := 0
	for _, table := range []string{TableMangle, TableNat} {
		chains, err := ipt.ListChains(table)
		if err != nil {
			return removed, fmt.Errorf("list chains of table %s: %w", table, err)
		}
		// Jumps first: a chain that is still referenced cannot be deleted.
		for _, ch := range chains {
			if isOurs(ch) {
				continue
			}
			lines, err := ipt.List(table, ch)
			if err != nil {
				return removed, fmt.Errorf("list %s/%s: %w", table, ch, err)
			}
			var ids []int
			for i, line := range ruleLines(lines) {
				if t := lineTarget(line); isOurs(t) {
					ids = append(ids, i+1)
				}
			}
			if err := deleteByIDs(ipt, table, ch, ids); err != nil {
				return removed, err
			}
			removed += len(ids)
		}
		for _, ch := range chains {
			if !isOurs(ch) {
				continue
			}
			if err := ipt.ClearAndDeleteChain(table, ch); err != nil {
				return removed, fmt.Errorf("delete chain %s/%s: %w", table, ch, err)
			}
			removed++
		}
	}
	return removed, nil
}

func isOurs(chain string) bool { return strings.HasPrefix(chain, "AMBIT_") }

// chainMatches reports whether the chain holds exactly the wanted rules:
// the same number, each present (iptables -C). iptables normalises rules
// when printing them, so presence is checked by the kernel's comparison
// rather than by text.
func chainMatches(ipt *iptables.IPTables, ch Chain, want []Rule) (bool, error) {
	lines, err := ipt.List(ch.Table, ch.Name)
	if err != nil {
		return false, fmt.Errorf("list %s/%s: %w", ch.Table, ch.Name, err)
	}
	if len(ruleLines(lines)) != len(want) {
		return false, nil
	}
	for _, r := range want {
		ok, err := ipt.Exists(r.Table, r.Chain, r.Spec()...)
		if err != nil {
			return false, fmt.Errorf("check rule in %s/%s: %w", r.Table, r.Chain, err)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// jumpState returns the 1-based positions of rules in j's chain jumping to
// j's target, and whether j itself (with its comment) is present.
func jumpState(ipt *iptables.IPTables, j Rule) (ids []int, exact bool, err error) {
	lines, err := ipt.List(j.Table, j.Chain)
	if err != nil {
		return nil, false, fmt.Errorf("list %s/%s: %w", j.Table, j.Chain, err)
	}
	target := jumpTarget(j)
	for i, line := range ruleLines(lines) {
		if lineTarget(line) == target {
			ids = append(ids, i+1)
		}
	}
	if len(ids) == 0 {
		return nil, false, nil
	}
	exact, err = ipt.Exists(j.Table, j.Chain, j.Spec()...)
	if err != nil {
		return nil, false, fmt.Errorf("check jump %s/%s -> %s: %w", j.Table, j.Chain, target, err)
	}
	return ids, exact, nil
}

// deleteByIDs deletes rules by position, highest first so positions stay
// valid.
func deleteByIDs(ipt *iptables.IPTables, table, chain string, ids []int) error {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	slices.Reverse(ids)
	for _, id := range ids {
		if err := ipt.DeleteById(table, chain, id); err != nil {
			return fmt.Errorf("delete rule %d of %s/%s: %w", id, table, chain, err)
		}
	}
	return nil
}

// ruleLines keeps the "-A" lines of `iptables -S` output, in rule order.
func ruleLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

// lineTarget returns the chain a `-A ... -j TARGET` line jumps to.
func lineTarget(line string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			return f[i+1]
		}
	}
	return ""
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
