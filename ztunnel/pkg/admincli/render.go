package admincli

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"ambit.dev/ztunnel/pkg/adminapi"
)

// table writes aligned columns; empty cells are shown as "-".
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// RenderCerts writes one row per certificate of each identity's chain
// (leaf, intermediates, roots), judging validity at now.
func RenderCerts(w io.Writer, certs []adminapi.CertDump, now time.Time) error {
	t := newTable(w, "IDENTITY", "TYPE", "STATUS", "SERIAL", "NOT BEFORE", "NOT AFTER", "VALID")
	certs = slices.Clone(certs)
	slices.SortStableFunc(certs, func(a, b adminapi.CertDump) int { return cmp.Compare(a.Identity, b.Identity) })
	for _, d := range certs {
		if len(d.Chain) == 0 {
			valid := ""
			if d.LastError != "" {
				valid = "error: " + d.LastError
			}
			t.row(d.Identity, "", cmp.Or(d.State, adminapi.CertPending), "", "", "", valid)
			continue
		}
		for _, c := range d.Chain {
			t.row(d.Identity, c.Type, adminapi.CertState(c.NotBefore, c.NotAfter, now), c.Serial,
				formatTime(c.NotBefore), formatTime(c.NotAfter), validity(c.NotBefore, c.NotAfter, now))
		}
	}
	return t.flush()
}

// RenderWorkloads writes one row per workload, sorted by namespace and name.
func RenderWorkloads(w io.Writer, ws []adminapi.WorkloadDump) error {
	t := newTable(w, "NAMESPACE", "NAME", "ADDRESSES", "NODE", "PROTOCOL", "MTLS", "CAPTURED", "SERVICE ACCOUNT")
	ws = slices.Clone(ws)
	slices.SortStableFunc(ws, func(a, b adminapi.WorkloadDump) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	for _, wl := range ws {
		t.row(wl.Namespace, wl.Name, strings.Join(wl.Addresses, ","), wl.Node, wl.Protocol, wl.MTLSMode,
			yesNo(wl.Captured), wl.ServiceAccount)
	}
	return t.flush()
}

// RenderPolicies writes one row per policy, sorted by namespace and name.
func RenderPolicies(w io.Writer, ps []adminapi.PolicyDump) error {
	t := newTable(w, "NAMESPACE", "NAME", "SCOPE", "ACTION", "RULES")
	ps = slices.Clone(ps)
	slices.SortStableFunc(ps, func(a, b adminapi.PolicyDump) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, p := range ps {
		rules := strconv.Itoa(p.Rules)
		if strings.HasPrefix(p.Action, "PEER_AUTHENTICATION") {
			rules = "-"
		}
		t.row(p.Namespace, p.Name, p.Scope, p.Action, rules)
	}
	return t.flush()
}

// RenderServices writes one row per service, sorted by namespace and name.
func RenderServices(w io.Writer, ss []adminapi.ServiceDump) error {
	t := newTable(w, "NAMESPACE", "NAME", "HOSTNAME", "VIPS", "PORTS", "WAYPOINT")
	ss = slices.Clone(ss)
	slices.SortStableFunc(ss, func(a, b adminapi.ServiceDump) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, s := range ss {
		t.row(s.Namespace, s.Name, s.Hostname, strings.Join(s.VIPs, ","), formatPorts(s.Ports), s.Waypoint)
	}
	return t.flush()
}

// RenderConnections writes one row per connection, oldest first; AGE is
// measured from now.
func RenderConnections(w io.Writer, cs []adminapi.ConnDump, now time.Time) error {
	t := newTable(w, "DIRECTION", "PROTOCOL", "SRC", "DST", "SRC PRINCIPAL", "DST PRINCIPAL", "AGE", "SENT", "RECEIVED")
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b adminapi.ConnDump) int {
		return cmp.Or(a.Opened.Compare(b.Opened), cmp.Compare(a.ID, b.ID))
	})
	for _, c := range cs {
		t.row(c.Direction, c.Protocol, c.Src, c.Dst, c.SrcPrincipal, c.DstPrincipal,
			HumanDuration(now.Sub(c.Opened)), HumanBytes(c.BytesSent), HumanBytes(c.BytesReceived))
	}
	return t.flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// validity says how long a certificate remains valid, or since when it is
// expired, or when it becomes valid.
func validity(notBefore, notAfter, now time.Time) string {
	switch adminapi.CertState(notBefore, notAfter, now) {
	case adminapi.CertNotYetValid:
		return "valid in " + HumanDuration(notBefore.Sub(now))
	case adminapi.CertExpired:
		return "expired " + HumanDuration(now.Sub(notAfter)) + " ago"
	default:
		return HumanDuration(notAfter.Sub(now)) + " left"
	}
}

// HumanDuration prints d (made non-negative, truncated to seconds) with its
// two largest units: 45s, 5m, 5m3s, 23h59m, 3d4h.
func HumanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	s := int64(d / time.Second)
	two := func(big int64, bu string, small int64, su string) string {
		if small == 0 {
			return strconv.FormatInt(big, 10) + bu
		}
		return strconv.FormatInt(big, 10) + bu + strconv.FormatInt(small, 10) + su
	}
	switch {
	case s < 60:
		return strconv.FormatInt(s, 10) + "s"
	case s < 3600:
		return two(s/60, "m", s%60, "s")
	case s < 48*3600:
		return two(s/3600, "h", s%3600/60, "m")
	default:
		return two(s/86400, "d", s%86400/3600, "h")
	}
}

// HumanBytes prints n in B, KiB, MiB, GiB or TiB.
func HumanBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 || u == "TiB" {
			return strconv.FormatFloat(v, 'f', 1, 64) + u
		}
	}
	panic("unreachable")
}

// formatPorts prints port->targetPort pairs sorted by port number.
func formatPorts(ports map[string]uint32) string {
	keys := make([]string, 0, len(ports))
	for k := range ports {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ai, aerr := strconv.Atoi(a)
		bi, berr := strconv.Atoi(b)
		if aerr == nil && berr == nil {
			return cmp.Compare(ai, bi)
		}
		return cmp.Compare(a, b)
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"->"+strconv.FormatUint(uint64(ports[k]), 10))
	}
	return strings.Join(parts, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
