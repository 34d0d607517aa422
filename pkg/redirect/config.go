// Package redirect builds and installs the traffic redirection rules that
// capture an enrolled pod's TCP traffic into ztunnel.
//
// The rules live INSIDE the pod's network namespace (never the node's root
// namespace), in chains of our own (AMBIT_PREROUTING, AMBIT_OUTPUT in the nat
// and mangle tables) reached by one jump rule per built-in chain, so that
// installing, checking and removing them touches nothing else:
//
//   - outbound TCP is REDIRECTed to ztunnel's outbound listener (:15001),
//     except loopback traffic and ztunnel's own sockets (SO_MARK 0x539);
//   - inbound TCP is REDIRECTed to ztunnel's inbound plaintext listener
//     (:15006), except HBONE (:15008, where ztunnel listens itself), traffic
//     carrying ztunnel's mark, loopback, and kubelet probes
//     (Config.ProbeSourceIPs);
//   - ztunnel delivers inbound connections to the application transparently,
//     from the original client address (IP_TRANSPARENT). The application's
//     replies are addressed to that client and would leave through eth0; a
//     connmark set on those connections is restored onto the reply packets
//     and a policy route (ip rule fwmark → table with "local default dev lo")
//     delivers them locally, back to ztunnel's socket.
//
// [Build] is the pure decision (a [Plan] for a [Config]); [Installer] applies
// a plan inside a netns idempotently: per IP family it reads the netns's
// rules with one iptables-save and writes what differs with at most one
// iptables-restore --noflush, then sets the policy route over netlink.
package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Family is an IP family the rules are generated for.
type Family int

// IP families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	default:
		return fmt.Sprintf("Family(%d)", int(f))
	}
}

// Backend selects which iptables implementation writes the rules. One
// backend is used per netns; rules written with one are invisible to the
// other, so a node agent must keep using the backend it installed with.
type Backend string

// iptables backends.
const (
	// BackendAuto uses the `iptables`/`ip6tables` binaries on PATH, i.e. the
	// backend the node's distribution selected (nf_tables on Debian 12).
	BackendAuto Backend = ""
	// BackendNFT uses iptables-nft/ip6tables-nft (the nf_tables kernel API).
	BackendNFT Backend = "nft"
	// BackendLegacy uses iptables-legacy/ip6tables-legacy (x_tables).
	BackendLegacy Backend = "legacy"
)

// String returns the backend name, "auto" for BackendAuto.
func (b Backend) String() string {
	if b == BackendAuto {
		return "auto"
	}
	return string(b)
}

// Binaries returns the iptables command for family f, and its -save
// companion, for this backend.
func (b Backend) Binaries(f Family) (cmd, save string, err error) {
	base := "iptables"
	if f == IPv6 {
		base = "ip6tables"
	} else if f != IPv4 {
		return "", "", fmt.Errorf("unknown IP family %v", f)
	}
	switch b {
	case BackendAuto:
		return base, base + "-save", nil
	case BackendNFT:
		return base + "-nft", base + "-nft-save", nil
	case BackendLegacy:
		return base + "-legacy", base + "-legacy-save", nil
	default:
		return "", "", fmt.Errorf("unknown iptables backend %q (want %q, %q or %q)", string(b), BackendAuto, BackendNFT, BackendLegacy)
	}
}

// RestoreBinary returns the iptables-restore companion of Binaries for
// family f: iptables-restore, iptables-nft-restore, ip6tables-legacy-restore…
func (b Backend) RestoreBinary(f Family) (string, error) {
	_, save, err := b.Binaries(f)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(save, "-save") + "-restore", nil
}

// Defaults used for zero Config fields. They match the ports and marks in
// ARCHITECTURE.md (and the values Istio ambient uses, so an operator's
// knowledge carries over).
const (
	DefaultOutboundPort         uint16 = 15001
	DefaultInboundPlaintextPort uint16 = 15006
	DefaultHBONEPort            uint16 = 15008
	DefaultZtunnelMark          uint32 = 0x539
	DefaultInboundConnMark      uint32 = 0x111
	DefaultMarkMask             uint32 = 0xfff
	DefaultRouteTable                  = 100
	DefaultRulePriority                = 32764
)

// Chain names owned by Ambit. Nothing else in the netns is modified except
// the one jump rule per built-in chain that leads here.
const (
	ChainPrerouting = "AMBIT_PREROUTING"
	ChainOutput     = "AMBIT_OUTPUT"
)

// CommentPrefix starts the iptables comment of every rule Ambit installs, so
// `iptables-save | grep ambit:` shows them with the reason they exist.
const CommentPrefix = "ambit: "

// Config describes the redirection for one pod. Zero fields take the
// Default* values above; the zero Config is the standard dual-stack setup.
type Config struct {
	// Families to install rules for. Empty means IPv4 and IPv6.
	Families []Family
	// Backend selects the iptables implementation; empty is BackendAuto.
	Backend Backend

	// OutboundPort is ztunnel's outbound capture listener (15001).
	OutboundPort uint16
	// InboundPlaintextPort is ztunnel's inbound plaintext listener (15006).
	InboundPlaintextPort uint16
	// HBONEPort is ztunnel's HBONE listener inside the pod (15008); inbound
	// traffic to it is not redirected.
	HBONEPort uint16

	// ZtunnelMark is the SO_MARK on ztunnel's sockets (0x539); packets
	// carrying it (under MarkMask) are never captured.
	ZtunnelMark uint32
	// InboundConnMark tags connections ztunnel opened to the local
	// application (0x111); the application's replies get it as packet mark
	// and are routed back to ztunnel through RouteTable.
	InboundConnMark uint32
	// MarkMask restricts which mark bits Ambit reads and writes (0xfff), so
	// other users of the mark (CNI, kube-proxy) keep theirs.
	MarkMask uint32
	// RouteTable is the policy routing table holding "local default dev lo"
	// (100).
	RouteTable int
	// RulePriority is the priority of the "fwmark InboundConnMark lookup
	// RouteTable" ip rule (32764: before main at 32766).
	RulePriority int

	// ProbeSourceIPs are source addresses whose inbound connections are not
	// captured: the address kubelet probes arrive from (the node's host-side
	// address, or a fixed address the node agent SNATs probes to, such as
	// 169.254.7.127). Addresses of a family not in Families are ignored.
	ProbeSourceIPs []netip.Addr
}

// resolve returns c with defaults filled in, or an error saying which field
// is wrong.
func (c Config) resolve() (Config, error) {
	if len(c.Families) == 0 {
		c.Families = []Family{IPv4, IPv6}
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPlaintextPort == 0 {
		c.InboundPlaintextPort = DefaultInboundPlaintextPort
	}
	if c.HBONEPort == 0 {
		c.HBONEPort = DefaultHBONEPort
	}
	if c.ZtunnelMark == 0 {
		c.ZtunnelMark = DefaultZtunnelMark
	}
	if c.InboundConnMark == 0 {
		c.InboundConnMark = DefaultInboundConnMark
	}
	if c.MarkMask == 0 {
		c.MarkMask = DefaultMarkMask
	}
	if c.RouteTable == 0 {
		c.RouteTable = DefaultRouteTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}

	var errs []error
	seen := map[Family]bool{}
	for _, f := range c.Families {
		if f != IPv4 && f != IPv6 {
			errs = append(errs, fmt.Errorf("Families: unknown family %v (want IPv4 or IPv6)", f))
		}
		if seen[f] {
			errs = append(errs, fmt.Errorf("Families: %v listed twice", f))
		}
		seen[f] = true
	}
	if _, _, err := c.Backend.Binaries(IPv4); err != nil {
		errs = append(errs, fmt.Errorf("Backend: %w", err))
	}
	if c.OutboundPort == c.InboundPlaintextPort || c.OutboundPort == c.HBONEPort || c.InboundPlaintextPort == c.HBONEPort {
		errs = append(errs, fmt.Errorf("ports must differ: outbound %d, inbound plaintext %d, HBONE %d",
			c.OutboundPort, c.InboundPlaintextPort, c.HBONEPort))
	}
	if c.ZtunnelMark&^c.MarkMask != 0 {
		errs = append(errs, fmt.Errorf("ZtunnelMark %#x has bits outside MarkMask %#x", c.ZtunnelMark, c.MarkMask))
	}
	if c.InboundConnMark&^c.MarkMask != 0 {
		errs = append(errs, fmt.Errorf("InboundConnMark %#x has bits outside MarkMask %#x", c.InboundConnMark, c.MarkMask))
	}
	if c.ZtunnelMark == c.InboundConnMark {
		errs = append(errs, fmt.Errorf("ZtunnelMark and InboundConnMark must differ (both %#x)", c.ZtunnelMark))
	}
	// 253..255 are the kernel's default, main and local tables; 0 is unspec.
	if c.RouteTable < 1 || c.RouteTable >= 253 && c.RouteTable <= 255 {
		errs = append(errs, fmt.Errorf("RouteTable %d is reserved by the kernel (0, 253-255)", c.RouteTable))
	}
	if c.RulePriority < 1 || c.RulePriority >= 32766 {
		errs = append(errs, fmt.Errorf("RulePriority %d must be in 1..32765 so the rule is consulted before the main table", c.RulePriority))
	}
	for _, ip := range c.ProbeSourceIPs {
		if !ip.IsValid() || ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("ProbeSourceIPs: %v is not a usable source address", ip))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid redirect config: %w", err)
	}
	return c, nil
}
