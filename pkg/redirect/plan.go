package redirect

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// iptables tables used.
const (
	TableNat    = "nat"
	TableMangle = "mangle"
)

// Chain is one of our chains in a table of one family.
type Chain struct {
	Family Family
	Table  string
	Name   string
}

// Rule is one iptables rule: Match, then the comment, then Target, appended
// to Chain (our chains) or inserted first (jumps from built-in chains).
type Rule struct {
	Family Family
	Table  string
	Chain  string
	// Match is the match part of the rulespec, e.g. ["-p", "tcp"].
	Match []string
	// Target is the target part, e.g. ["-j", "REDIRECT", "--to-ports", "15001"].
	Target []string
	// Comment says why the rule exists; installed as an iptables comment
	// (prefixed with CommentPrefix) so it shows in iptables-save.
	Comment string
}

// Spec returns the full rulespec as passed to `iptables -A <chain>`.
func (r Rule) Spec() []string {
	spec := make([]string, 0, len(r.Match)+len(r.Target)+4)
	spec = append(spec, r.Match...)
	spec = append(spec, "-m", "comment", "--comment", CommentPrefix+r.Comment)
	return append(spec, r.Target...)
}

// PolicyRoute is the policy routing that returns the application's replies
// on ztunnel-originated inbound connections to ztunnel:
//
//	ip rule add fwmark Mark/Mask priority Priority lookup Table
//	ip route add local <0.0.0.0/0 | ::/0> dev lo table Table
type PolicyRoute struct {
	Family   Family
	Mark     uint32
	Mask     uint32
	Priority int
	Table    int
}

// Plan is everything installed in one pod netns for a Config.
type Plan struct {
	// Config is the input with defaults filled in.
	Config Config
	// Chains are our chains, created before any rule.
	Chains []Chain
	// Jumps are the rules inserted first in built-in chains that lead to
	// our chains; the only rules outside our chains.
	Jumps []Rule
	// Rules are the contents of our chains, in order.
	Rules []Rule
	// Routes are the ip rules and routes, one per family.
	Routes []PolicyRoute
}

// Build decides the rules for cfg. It is pure: the same Config always gives
// the same Plan.
func Build(cfg Config) (Plan, error) {
	c, err := cfg.resolve()
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Config: c}
	for _, f := range c.Families {
		p.add(f)
	}
	return p, nil
}

func (p *Plan) add(f Family) {
	c := p.Config
	mark := hexMark(c.ZtunnelMark, c.MarkMask)
	connMark := hexMark(c.InboundConnMark, c.MarkMask)
	mask := fmt.Sprintf("%#x", c.MarkMask)

	// Our chains. mangle has no PREROUTING chain of ours: everything it has
	// to do happens to locally generated packets (OUTPUT).
	p.Chains = append(p.Chains,
		Chain{f, TableMangle, ChainOutput},
		Chain{f, TableNat, ChainPrerouting},
		Chain{f, TableNat, ChainOutput},
	)

	// One jump per built-in chain, inserted first so that rules other
	// software adds later in the pod netns cannot bypass the capture.
	p.Jumps = append(p.Jumps,
		Rule{f, TableMangle, "OUTPUT", nil, []string{"-j", ChainOutput},
			"mark ztunnel's inbound connections to the app and route the app's replies back to ztunnel"},
		Rule{f, TableNat, "PREROUTING", nil, []string{"-j", ChainPrerouting},
			"capture inbound TCP into ztunnel"},
		Rule{f, TableNat, "OUTPUT", nil, []string{"-j", ChainOutput},
			"capture outbound TCP into ztunnel"},
	)

	// mangle AMBIT_OUTPUT: the return path of transparent inbound.
	//
	// ztunnel delivers an inbound connection to the app from the original
	// client's address (IP_TRANSPARENT, SO_MARK ZtunnelMark). The app's
	// replies are addressed to that remote client, so plain routing would
	// send them out of the pod. We tag the connection when ztunnel opens
	// it, and put the tag on the app's reply packets; the ip rule
	// "fwmark InboundConnMark lookup RouteTable" then routes them with
	// "local default dev lo", i.e. delivers them locally, where ztunnel's
	// transparent socket receives them. Changing the mark in mangle OUTPUT
	// makes the kernel re-route the packet, which is why this is mangle.
	p.Rules = append(p.Rules,
		Rule{f, TableMangle, ChainOutput,
			// First packet of a connection from a ztunnel socket to an
			// address of this pod: ztunnel handing an inbound connection to
			// the app. Restricted to local destinations so ztunnel's
			// outbound connections (HBONE, passthrough) are left untagged.
			[]string{"-p", "tcp", "-m", "mark", "--mark", mark, "-m", "addrtype", "--dst-type", "LOCAL",
				"-m", "conntrack", "--ctstate", "NEW"},
			[]string{"-j", "CONNMARK", "--set-xmark", connMark},
			"tag connections ztunnel opens to the app so the app's replies can be routed back to ztunnel"},
		Rule{f, TableMangle, ChainOutput,
			// Only the reply direction (the app's packets): ztunnel's own
			// packets on the connection keep ZtunnelMark.
			[]string{"-p", "tcp", "-m", "connmark", "--mark", connMark, "-m", "conntrack", "--ctdir", "REPLY"},
			[]string{"-j", "CONNMARK", "--restore-mark", "--nfmask", mask, "--ctmask", mask},
			"app replies to ztunnel's transparent connections: restore the tag as packet mark for the fwmark policy route to lo"},
	)

	// nat AMBIT_PREROUTING: inbound capture (packets arriving from outside
	// the pod; NAT is decided on a connection's first packet only).
	p.Rules = append(p.Rules,
		Rule{f, TableNat, ChainPrerouting,
			// Pod-local connections are decided in OUTPUT (nat PREROUTING
			// is not consulted again when they loop back); kept explicit.
			[]string{"-i", "lo"},
			[]string{"-j", "RETURN"},
			"loopback traffic stays inside the pod"},
		Rule{f, TableNat, ChainPrerouting,
			[]string{"-m", "mark", "--mark", mark},
			[]string{"-j", "RETURN"},
			"traffic from ztunnel's own sockets is never captured"},
	)
	for _, ip := range c.ProbeSourceIPs {
		if familyOf(ip) != f {
			continue
		}
		p.Rules = append(p.Rules, Rule{f, TableNat, ChainPrerouting,
			// The kubelet probes from the node; a probe must reach the app
			// as it would without the mesh (and ztunnel would refuse it
			// under STRICT mTLS).
			[]string{"-s", netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()).String(), "-p", "tcp"},
			[]string{"-j", "RETURN"},
			"kubelet health probes from the node reach the app directly"})
	}
	p.Rules = append(p.Rules,
		Rule{f, TableNat, ChainPrerouting,
			// ztunnel listens on the HBONE port inside the pod itself.
			[]string{"-p", "tcp", "-m", "tcp", "--dport", port(c.HBONEPort)},
			[]string{"-j", "RETURN"},
			"HBONE goes straight to ztunnel's listener in the pod"},
		Rule{f, TableNat, ChainPrerouting,
			[]string{"-p", "tcp"},
			[]string{"-j", "REDIRECT", "--to-ports", port(c.InboundPlaintextPort)},
			"inbound plaintext TCP to ztunnel's inbound listener"},
	)

	// nat AMBIT_OUTPUT: outbound capture (connections the pod opens).
	p.Rules = append(p.Rules,
		Rule{f, TableNat, ChainOutput,
			// Also covers connections to the pod's own IP, which route via lo.
			[]string{"-o", "lo"},
			[]string{"-j", "RETURN"},
			"loopback traffic stays inside the pod"},
		Rule{f, TableNat, ChainOutput,
			[]string{"-m", "mark", "--mark", mark},
			[]string{"-j", "RETURN"},
			"ztunnel's own connections (HBONE, passthrough, delivery to the app) are never captured"},
		Rule{f, TableNat, ChainOutput,
			// nat sees a connection's first packet only; for these
			// connections that is ztunnel's SYN, already skipped by mark,
			// so the app's replies never reach nat. Stated explicitly so a
			// reordering above cannot capture them.
			[]string{"-m", "connmark", "--mark", connMark},
			[]string{"-j", "RETURN"},
			"connections ztunnel opened to the app (inbound side) are never captured"},
		Rule{f, TableNat, ChainOutput,
			[]string{"-p", "tcp"},
			[]string{"-j", "REDIRECT", "--to-ports", port(c.OutboundPort)},
			"outbound TCP to ztunnel's outbound listener"},
	)

	p.Routes = append(p.Routes, PolicyRoute{
		Family:   f,
		Mark:     c.InboundConnMark,
		Mask:     c.MarkMask,
		Priority: c.RulePriority,
		Table:    c.RouteTable,
	})
}

// String renders the plan in iptables-restore syntax per family, followed by
// the equivalent `ip` commands; it is what the golden files hold.
func (p Plan) String() string {
	var b strings.Builder
	for _, f := range p.Config.Families {
		fmt.Fprintf(&b, "# %v\n", f)
		for _, table := range []string{TableMangle, TableNat} {
			fmt.Fprintf(&b, "*%s\n", table)
			for _, ch := range p.Chains {
				if ch.Family == f && ch.Table == table {
					fmt.Fprintf(&b, ":%s - [0:0]\n", ch.Name)
				}
			}
			for _, r := range p.Jumps {
				if r.Family == f && r.Table == table {
					fmt.Fprintf(&b, "-I %s 1 %s\n", r.Chain, quoteArgs(r.Spec()))
				}
			}
			for _, r := range p.Rules {
				if r.Family == f && r.Table == table {
					fmt.Fprintf(&b, "-A %s %s\n", r.Chain, quoteArgs(r.Spec()))
				}
			}
			b.WriteString("COMMIT\n")
		}
		for _, rt := range p.Routes {
			if rt.Family == f {
				fmt.Fprintf(&b, "%s\n%s\n", rt.RuleCommand(), rt.RouteCommand())
			}
		}
	}
	return b.String()
}

// RuleCommand is the `ip rule` command equivalent to the policy rule.
func (r PolicyRoute) RuleCommand() string {
	return fmt.Sprintf("ip -%d rule add fwmark %#x/%#x priority %d lookup %d", int(r.Family), r.Mark, r.Mask, r.Priority, r.Table)
}

// RouteCommand is the `ip route` command equivalent to the local route.
func (r PolicyRoute) RouteCommand() string {
	return fmt.Sprintf("ip -%d route add local %s dev lo table %d", int(r.Family), defaultPrefix(r.Family), r.Table)
}

func defaultPrefix(f Family) netip.Prefix {
	if f == IPv6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// rulesOf returns the rules of one family, table and chain, in order.
func rulesOf(rules []Rule, f Family, table, chain string) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.Family == f && r.Table == table && r.Chain == chain {
			out = append(out, r)
		}
	}
	return out
}

// jumpTarget returns the chain a jump rule leads to.
func jumpTarget(j Rule) string { return j.Target[len(j.Target)-1] }

func familyOf(ip netip.Addr) Family {
	if ip.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

func hexMark(mark, mask uint32) string { return fmt.Sprintf("%#x/%#x", mark, mask) }

func port(p uint16) string { return strconv.Itoa(int(p)) }
