package redirect

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var (
	probeV4 = netip.MustParseAddr("169.254.7.127")
	probeV6 = netip.MustParseAddr("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
)

func TestBuildGolden(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"ipv4", Config{Families: []Family{IPv4}, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}},
		{"ipv6", Config{Families: []Family{IPv6}, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}},
		{"dualstack-defaults", Config{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Build(tc.cfg)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got := p.String()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (run with -update if intended)\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// specs renders the rules of one family/table/chain as text lines.
func specs(p Plan, f Family, table, chain string) []string {
	var out []string
	for _, r := range rulesOf(p.Rules, f, table, chain) {
		out = append(out, strings.Join(append(slices.Clone(r.Match), r.Target...), " "))
	}
	return out
}

func TestBuildRules(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		fam   Family
		table string
		chain string
		want  []string
	}{
		{
			name: "ipv4 outbound skips lo, ztunnel mark, inbound connmark, then redirects",
			cfg:  Config{Families: []Family{IPv4}}, fam: IPv4, table: TableNat, chain: ChainOutput,
			want: []string{
				"-o lo -j RETURN",
				"-m mark --mark 0x539/0xfff -j RETURN",
				"-m connmark --mark 0x111/0xfff -j RETURN",
				"-p tcp -j REDIRECT --to-ports 15001",
			},
		},
		{
			name: "ipv6 inbound with probe source skips only the v6 probe address",
			cfg:  Config{Families: []Family{IPv6}, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}, fam: IPv6, table: TableNat, chain: ChainPrerouting,
			want: []string{
				"-i lo -j RETURN",
				"-m mark --mark 0x539/0xfff -j RETURN",
				"-s fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128 -p tcp -j RETURN",
				"-p tcp -m tcp --dport 15008 -j RETURN",
				"-p tcp -j REDIRECT --to-ports 15006",
			},
		},
		{
			name: "ipv4 inbound with v4-mapped probe source",
			cfg:  Config{ProbeSourceIPs: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1")}}, fam: IPv4, table: TableNat, chain: ChainPrerouting,
			want: []string{
				"-i lo -j RETURN",
				"-m mark --mark 0x539/0xfff -j RETURN",
				"-s 10.0.0.1/32 -p tcp -j RETURN",
				"-p tcp -m tcp --dport 15008 -j RETURN",
				"-p tcp -j REDIRECT --to-ports 15006",
			},
		},
		{
			name: "custom ports and marks",
			cfg: Config{Families: []Family{IPv4}, OutboundPort: 25001, InboundPlaintextPort: 25006, HBONEPort: 25008,
				ZtunnelMark: 0x5000, InboundConnMark: 0x6000, MarkMask: 0xf000},
			fam: IPv4, table: TableNat, chain: ChainPrerouting,
			want: []string{
				"-i lo -j RETURN",
				"-m mark --mark 0x5000/0xf000 -j RETURN",
				"-p tcp -m tcp --dport 25008 -j RETURN",
				"-p tcp -j REDIRECT --to-ports 25006",
			},
		},
		{
			name: "ipv6 mangle tags ztunnel's local connections and restores on replies",
			cfg:  Config{}, fam: IPv6, table: TableMangle, chain: ChainOutput,
			want: []string{
				"-p tcp -m mark --mark 0x539/0xfff -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x111/0xfff",
				"-p tcp -m connmark --mark 0x111/0xfff -m conntrack --ctdir REPLY -j CONNMARK --restore-mark --nfmask 0xfff --ctmask 0xfff",
			},
		},
		{
			name: "family not configured has no rules",
			cfg:  Config{Families: []Family{IPv4}}, fam: IPv6, table: TableNat, chain: ChainOutput,
			want: nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Build(tc.cfg)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if got := specs(p, tc.fam, tc.table, tc.chain); !slices.Equal(got, tc.want) {
				t.Errorf("rules of %v %s/%s:\n got %q\nwant %q", tc.fam, tc.table, tc.chain, got, tc.want)
			}
		})
	}
}

func TestBuildShape(t *testing.T) {
	p, err := Build(Config{ProbeSourceIPs: []netip.Addr{probeV4, probeV6}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Family{IPv4, IPv6} {
		t.Run(f.String(), func(t *testing.T) {
			var jumps []string
			for _, j := range p.Jumps {
				if j.Family == f {
					jumps = append(jumps, j.Table+"/"+j.Chain+"->"+jumpTarget(j))
				}
			}
			want := []string{"mangle/OUTPUT->AMBIT_OUTPUT", "nat/PREROUTING->AMBIT_PREROUTING", "nat/OUTPUT->AMBIT_OUTPUT"}
			if !slices.Equal(jumps, want) {
				t.Errorf("jumps = %q, want %q", jumps, want)
			}
			// Every jump leads to a chain we create.
			for _, j := range p.Jumps {
				if !slices.Contains(p.Chains, Chain{j.Family, j.Table, jumpTarget(j)}) {
					t.Errorf("jump %v to chain %s that is not created", j, jumpTarget(j))
				}
			}
			var routes []PolicyRoute
			for _, rt := range p.Routes {
				if rt.Family == f {
					routes = append(routes, rt)
				}
			}
			wantRT := []PolicyRoute{{Family: f, Mark: 0x111, Mask: 0xfff, Priority: 32764, Table: 100}}
			if !slices.Equal(routes, wantRT) {
				t.Errorf("routes = %+v, want %+v", routes, wantRT)
			}
		})
	}
	for _, r := range append(slices.Clone(p.Jumps), p.Rules...) {
		// iptables rejects comments longer than 256 bytes.
		if c := CommentPrefix + r.Comment; len(c) > 256 || r.Comment == "" {
			t.Errorf("rule %v: comment %q empty or over 256 bytes", r.Spec(), c)
		}
		// A jump target name inside a comment would confuse a reader of iptables -S.
		if strings.Contains(r.Comment, "-j ") {
			t.Errorf("rule %v: comment must not contain \"-j \"", r.Spec())
		}
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	cfg := Config{ProbeSourceIPs: []netip.Addr{probeV6, probeV4}}
	a, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("two builds of one config differ:\n%s\n---\n%s", a, b)
	}
}

func TestBuildRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"unknown family", Config{Families: []Family{5}}, "unknown family"},
		{"family twice", Config{Families: []Family{IPv6, IPv6}}, "listed twice"},
		{"unknown backend", Config{Backend: "ebpf"}, "unknown iptables backend"},
		{"ports collide", Config{OutboundPort: 15008}, "ports must differ"},
		{"ztunnel mark outside mask", Config{ZtunnelMark: 0x1539}, "ZtunnelMark 0x1539 has bits outside"},
		{"conn mark outside mask", Config{InboundConnMark: 0x10000}, "InboundConnMark 0x10000 has bits outside"},
		{"marks equal", Config{InboundConnMark: 0x539}, "must differ"},
		{"main table", Config{RouteTable: 254}, "reserved"},
		{"priority after main", Config{RulePriority: 32766}, "RulePriority"},
		{"invalid probe ip", Config{ProbeSourceIPs: []netip.Addr{{}}}, "ProbeSourceIPs"},
		{"unspecified v6 probe ip", Config{ProbeSourceIPs: []netip.Addr{netip.IPv6Unspecified()}}, "ProbeSourceIPs"},
		{"unspecified v4 probe ip", Config{ProbeSourceIPs: []netip.Addr{netip.IPv4Unspecified()}}, "ProbeSourceIPs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Build error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestBackendBinaries(t *testing.T) {
	cases := []struct {
		backend  Backend
		fam      Family
		cmd, sav string
	}{
		{BackendAuto, IPv4, "iptables", "iptables-save"},
		{BackendAuto, IPv6, "ip6tables", "ip6tables-save"},
		{BackendNFT, IPv4, "iptables-nft", "iptables-nft-save"},
		{BackendNFT, IPv6, "ip6tables-nft", "ip6tables-nft-save"},
		{BackendLegacy, IPv4, "iptables-legacy", "iptables-legacy-save"},
		{BackendLegacy, IPv6, "ip6tables-legacy", "ip6tables-legacy-save"},
	}
	for _, tc := range cases {
		t.Run(tc.backend.String()+"/"+tc.fam.String(), func(t *testing.T) {
			cmd, sav, err := tc.backend.Binaries(tc.fam)
			if err != nil || cmd != tc.cmd || sav != tc.sav {
				t.Errorf("Binaries = %q, %q, %v; want %q, %q", cmd, sav, err, tc.cmd, tc.sav)
			}
		})
	}
}

func TestBackendRestoreBinary(t *testing.T) {
	cases := []struct {
		backend Backend
		fam     Family
		want    string
	}{
		{BackendAuto, IPv4, "iptables-restore"},
		{BackendAuto, IPv6, "ip6tables-restore"},
		{BackendNFT, IPv4, "iptables-nft-restore"},
		{BackendNFT, IPv6, "ip6tables-nft-restore"},
		{BackendLegacy, IPv4, "iptables-legacy-restore"},
		{BackendLegacy, IPv6, "ip6tables-legacy-restore"},
	}
	for _, tc := range cases {
		t.Run(tc.backend.String()+"/"+tc.fam.String(), func(t *testing.T) {
			if got, err := tc.backend.RestoreBinary(tc.fam); err != nil || got != tc.want {
				t.Errorf("RestoreBinary = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := Backend("ebpf").RestoreBinary(IPv4); err == nil {
		t.Error("RestoreBinary accepted an unknown backend")
	}
}
