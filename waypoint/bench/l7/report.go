package main

import (
	"fmt"
	"io"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
)

const na = "—"

func (rw row) RowLabel() string      { return rw.label }
func (r *result) ColumnName() string { return r.name }
func (r *result) ColumnFailed() bool { return r.err != nil }

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()*1000) }

func mb(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// row is one metric across the paths; direct and l4 are those columns'
// results (nil when they failed).
type row struct {
	label string
	cell  func(r, direct, l4 *result) string
}

func addedP99(r, base *result) string {
	if base == nil || r == base || !r.base.measured || !base.base.measured {
		return na
	}
	return fmt.Sprintf("%+.3f", (r.base.p99-base.base.p99).Seconds()*1000)
}

func rows(cfg config) []row {
	at := fmt.Sprintf("@ %d req/s", cfg.rate)
	return []row{
		{"Latency p50 " + at + " (ms)", func(r, _, _ *result) string { return when(r.base.measured, ms(r.base.p50)) }},
		{"Latency p99 " + at + " (ms)", func(r, _, _ *result) string { return when(r.base.measured, ms(r.base.p99)) }},
		{fmt.Sprintf("Latency p99, median of the %d rounds' p99 (ms)", cfg.rounds), func(r, _, _ *result) string {
			return when(len(r.roundP99) > 0, ms(benchkit.Median(r.roundP99)))
		}},
		{"Added p99 vs direct (ms)", func(r, d, _ *result) string { return addedP99(r, d) }},
		{"Added p99 vs L4 only (ms)", func(r, _, l4 *result) string {
			if r.name == "direct" {
				return na
			}
			return addedP99(r, l4)
		}},
		{"Proxy CPU per 1000 requests " + at + " (CPU s, all proxies)", func(r, _, _ *result) string {
			return when(r.proxies && r.base.measured, fmt.Sprintf("%.4f", r.base.perKAll))
		}},
		{"L7 proxy CPU per 1000 requests " + at + " (CPU s, waypoint / HAProxy L7 only)", func(r, _, _ *result) string {
			return when(r.l7 && r.base.measured, fmt.Sprintf("%.4f", r.base.perKL7))
		}},
		{"L7 proxy read(2) / write(2) calls per request " + at + " (/proc/<pid>/io; recv/send not counted)", func(r, _, _ *result) string {
			// HAProxy moves data with recv/send, which /proc/<pid>/io does
			// not count (its few read(2) calls are not per request).
			return when(r.l7 && r.base.measured && r.base.readsPerReq+r.base.writesPerReq >= 0.5,
				fmt.Sprintf("%.1f / %.1f", r.base.readsPerReq, r.base.writesPerReq))
		}},
		{"L7 proxy RSS idle / peak (MB)", func(r, _, _ *result) string {
			return when(r.l7 && r.rssIdle > 0, mb(r.rssIdle)+" / "+mb(max(r.rssIdle, r.rssPeak)))
		}},
		{"of which file-backed, idle (MB; RssFile: binary pages, shared)", func(r, _, _ *result) string {
			return when(r.l7 && r.rssFile > 0, mb(r.rssFile))
		}},
		{fmt.Sprintf("Highest rate held (req/s; no errors, p99 ≤ %v)", cfg.holdP99), func(r, _, _ *result) string {
			if r.best == nil {
				return na
			}
			return fmt.Sprint(r.best.rate)
		}},
		{"Latency p50 / p99 at the highest rate (ms)", func(r, _, _ *result) string {
			if r.best == nil {
				return na
			}
			return ms(r.best.p50) + " / " + ms(r.best.p99)
		}},
		{"Proxy CPU per 1000 requests at the highest rate (CPU s, all / L7 proxy)", func(r, _, _ *result) string {
			if !r.proxies || r.best == nil {
				return na
			}
			s := fmt.Sprintf("%.4f", r.best.perKAll)
			if r.l7 {
				s += fmt.Sprintf(" / %.4f", r.best.perKL7)
			}
			return s
		}},
	}
}

func when(ok bool, s string) string {
	if !ok {
		return na
	}
	return s
}

// find returns the result named name, if it was measured.
func find(results []*result, name string) *result {
	for _, r := range results {
		if r.name == name && r.err == nil {
			return r
		}
	}
	return nil
}

func printReport(w io.Writer, cfg config, cmdline string, facts []string, results []*result, extra []string) {
	benchkit.WriteHeader(w, cmdline, facts)
	fmt.Fprintf(w, "- fixed rate: %v per path in %d rounds over %d persistent HTTP/1.1 connections; sweep: %v steps over %d connections; GET, %d-byte response\n\n",
		cfg.duration, cfg.rounds, cfg.conns, cfg.sweepDuration, cfg.sweepConns, bodySize)
	writeTable(w, cfg, results)
	fmt.Fprintln(w)
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "- %s: FAILED: %v\n", r.name, r.err)
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "- %s: %s\n", r.name, n)
		}
		if r.sweepEnd != "" {
			fmt.Fprintf(w, "- %s: sweep stopped: %s\n", r.name, r.sweepEnd)
		}
	}
	for _, n := range extra {
		fmt.Fprintf(w, "- %s\n", n)
	}
	for _, line := range targetChecks(cfg, results) {
		fmt.Fprintf(w, "- target: %s\n", line)
	}
}

func writeTable(w io.Writer, cfg config, results []*result) {
	direct, l4 := find(results, "direct"), find(results, "L4 only (2 ztunnels)")
	benchkit.WriteTable(w, rows(cfg), results, func(rw row, r *result) string { return rw.cell(r, direct, l4) })
}

// targetChecks compares the waypoint column with the targets of issue 9.
func targetChecks(cfg config, results []*result) []string {
	wp, l4, ref := find(results, "L4 + waypoint"), find(results, "L4 only (2 ztunnels)"), find(results, "HAProxy L7 reference")
	if wp == nil || !wp.base.measured {
		return nil
	}
	var out []string
	if l4 != nil && l4.base.measured {
		added := wp.base.p99 - l4.base.p99
		addedMed := benchkit.Median(wp.roundP99) - benchkit.Median(l4.roundP99)
		line := fmt.Sprintf("waypoint added p99 (L4 + waypoint − L4 only) ≤ 1 ms at %d req/s: %s (%+.3f ms; median of rounds %+.3f ms)",
			cfg.rate, benchkit.Verdict(added <= time.Millisecond), added.Seconds()*1000, addedMed.Seconds()*1000)
		if d := find(results, "direct"); d != nil && d.base.p99 > time.Millisecond {
			line += fmt.Sprintf(" — INCONCLUSIVE: the direct path's own p99 is %.3f ms, the machine was busy", d.base.p99.Seconds()*1000)
		}
		out = append(out, line)
	}
	if ref != nil && ref.base.measured {
		out = append(out, fmt.Sprintf("waypoint CPU per 1000 req ≤ the reference L7 proxy's: %s (waypoint %.4f, HAProxy L7 %.4f CPU s; whole paths %.4f vs %.4f)",
			benchkit.Verdict(wp.base.perKL7 <= ref.base.perKL7), wp.base.perKL7, ref.base.perKL7, wp.base.perKAll, ref.base.perKAll))
	}
	if wp.rssPeak > 0 {
		out = append(out, fmt.Sprintf("waypoint RSS < 40 MB: %s (idle %s MB, peak %s MB)", benchkit.Verdict(wp.rssPeak < 40<<20), mb(wp.rssIdle), mb(wp.rssPeak)))
	}
	return out
}
