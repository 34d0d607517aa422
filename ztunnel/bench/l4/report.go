package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
)

const na = "—"

// row is one metric across the paths.
type row struct {
	label string
	cell  func(r, direct *result) string
}

func (rw row) RowLabel() string      { return rw.label }
func (r *result) ColumnName() string { return r.name }
func (r *result) ColumnFailed() bool { return r.err != nil }

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()*1000) }

func mb(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// perProxy prints one value per proxy process: "client side / server side".
func perProxy(vals []uint64, f func(uint64) string) string {
	if len(vals) == 0 {
		return na
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = f(v)
	}
	return strings.Join(parts, " / ")
}

func rows(cfg config) []row {
	return []row{
		{"Throughput, 1 stream (MB/s)", func(r, _ *result) string {
			if !r.measuredThroughput {
				return na
			}
			return fmt.Sprintf("%.0f", r.tput1)
		}},
		{fmt.Sprintf("Throughput, %d streams (MB/s)", cfg.streams), func(r, _ *result) string {
			if !r.measuredThroughput {
				return na
			}
			return fmt.Sprintf("%.0f", r.tput8)
		}},
		{fmt.Sprintf("Latency p50 @ %d req/s, 1 KiB (ms)", cfg.rate), func(r, _ *result) string {
			if !r.measuredLatency {
				return na
			}
			return ms(r.p50)
		}},
		{fmt.Sprintf("Latency p99 @ %d req/s, 1 KiB (ms)", cfg.rate), func(r, _ *result) string {
			if !r.measuredLatency {
				return na
			}
			return ms(r.p99)
		}},
		{"Added p99 vs direct (ms)", func(r, d *result) string {
			if !r.measuredLatency || d == nil || !d.measuredLatency || r == d {
				return na
			}
			return fmt.Sprintf("%+.3f", (r.p99-d.p99).Seconds()*1000)
		}},
		{fmt.Sprintf("Latency p99, median of the %d rounds' p99 (ms)", cfg.rounds), func(r, _ *result) string {
			if len(r.roundP99) == 0 {
				return na
			}
			return ms(benchkit.Median(r.roundP99))
		}},
		{"Proxy CPU per GB (CPU s, all proxies)", func(r, _ *result) string {
			if !r.proxies || r.cpuPerGB == 0 {
				return na
			}
			return fmt.Sprintf("%.2f", r.cpuPerGB)
		}},
		{"Proxy CPU per 1000 requests (CPU s, all proxies)", func(r, _ *result) string {
			if !r.proxies || !r.measuredLatency {
				return na
			}
			return fmt.Sprintf("%.4f", r.cpuPer1kReq)
		}},
		{fmt.Sprintf("Proxy vCPU @ %d req/s (all proxies)", cfg.rate), func(r, _ *result) string {
			if !r.proxies || !r.measuredLatency {
				return na
			}
			return fmt.Sprintf("%.3f", r.vcpuAtRate)
		}},
		{"Proxy RSS idle (MB, client / server side)", func(r, _ *result) string { return perProxy(r.rssIdle, mb) }},
		{"of which file-backed, idle (MB; RssFile: binary pages, shared)", func(r, _ *result) string { return perProxy(r.rssFileIdle, mb) }},
		{fmt.Sprintf("Proxy RSS @ %d req/s (MB, peak)", cfg.rate), func(r, _ *result) string { return perProxy(r.rssRate, mb) }},
		{"Proxy RSS under throughput load (MB, peak)", func(r, _ *result) string { return perProxy(r.rssLoad, mb) }},
		{fmt.Sprintf("Memory per idle connection @ %d conns (KB, client / server side)", cfg.idleConns), func(r, _ *result) string {
			if len(r.perConn) == 0 {
				return na
			}
			parts := make([]string, len(r.perConn))
			for i, v := range r.perConn {
				parts[i] = fmt.Sprintf("%.1f", v/1024)
			}
			s := strings.Join(parts, " / ")
			if r.idleOpened != cfg.idleConns {
				s += fmt.Sprintf(" (%d opened)", r.idleOpened)
			}
			return s
		}},
		{fmt.Sprintf("New connections/s (%d workers, 1-byte echo)", cfg.crWorkers), func(r, _ *result) string {
			if !r.measuredConnRate {
				return na
			}
			return fmt.Sprintf("%.0f", r.connsPerSec)
		}},
		{fmt.Sprintf("ztunnel node1 RSS idle with %d pods (MB)", cfg.pods), func(r, _ *result) string {
			if r.podsRSS == 0 {
				return na
			}
			return mb(r.podsRSS)
		}},
	}
}

func printReport(w io.Writer, cfg config, cmdline string, facts []string, haproxyVersion string, results []*result) {
	benchkit.WriteHeader(w, cmdline, facts)
	if haproxyVersion != "" {
		fmt.Fprintf(w, "- reference: %s\n", haproxyVersion)
	}
	fmt.Fprintf(w, "- phases: %v each; latency over %d persistent connections; throughput sink reads 256 KiB, writers write 128 KiB\n\n", cfg.duration, cfg.rrConns)

	var direct *result
	for _, r := range results {
		if !r.proxies && r.err == nil && direct == nil {
			direct = r
		}
	}
	benchkit.WriteTable(w, rows(cfg), results, func(rw row, r *result) string { return rw.cell(r, direct) })
	fmt.Fprintln(w)
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "- %s: FAILED: %v\n", r.name, r.err)
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "- %s: %s\n", r.name, n)
		}
	}
	for _, line := range targetChecks(cfg, results, direct) {
		fmt.Fprintf(w, "- target: %s\n", line)
	}
}

// targetChecks compares the Ambit column with the targets of issue 4.
func targetChecks(cfg config, results []*result, direct *result) []string {
	var amb, hap *result
	for _, r := range results {
		switch {
		case strings.HasPrefix(r.name, "Ambit"):
			amb = r
		case strings.HasPrefix(r.name, "HAProxy"):
			hap = r
		}
	}
	if amb == nil || amb.err != nil {
		return nil
	}
	var out []string
	if hap != nil && hap.err == nil && amb.measuredThroughput && hap.measuredThroughput {
		out = append(out, fmt.Sprintf("throughput >= HAProxy pair: %s (1 stream %.0f vs %.0f MB/s, %d streams %.0f vs %.0f MB/s)",
			benchkit.Verdict(amb.tput1 >= hap.tput1 && amb.tput8 >= hap.tput8), amb.tput1, hap.tput1, cfg.streams, amb.tput8, hap.tput8))
	}
	if direct != nil && direct.measuredLatency && amb.measuredLatency {
		added := amb.p99 - direct.p99
		addedMed := benchkit.Median(amb.roundP99) - benchkit.Median(direct.roundP99)
		line := fmt.Sprintf("added p99 of both ztunnels <= 0.20 ms: %s (%+.3f ms; median of rounds %+.3f ms)",
			benchkit.Verdict(added <= 200*time.Microsecond), added.Seconds()*1000, addedMed.Seconds()*1000)
		if hap != nil && hap.measuredLatency {
			hadded := hap.p99 - direct.p99
			line += fmt.Sprintf("; <= HAProxy's: %s (HAProxy %+.3f ms; median of rounds %+.3f ms)", benchkit.Verdict(added <= hadded),
				hadded.Seconds()*1000, (benchkit.Median(hap.roundP99)-benchkit.Median(direct.roundP99)).Seconds()*1000)
		}
		if direct.p99 > time.Millisecond {
			line += fmt.Sprintf(" — INCONCLUSIVE: the direct path's own p99 is %.3f ms, so the machine was busy and p99 measures that", direct.p99.Seconds()*1000)
		}
		out = append(out, line)
	}
	perK := float64(cfg.rate) / 1000
	if amb.measuredLatency && len(amb.rssRate) > 0 {
		vcpuEach := amb.vcpuAtRate / float64(len(amb.rssRate)) / perK
		maxRSS := max(amb.rssRate[0], amb.rssRate[len(amb.rssRate)-1])
		out = append(out, fmt.Sprintf("<= 0.06 vCPU per 1000 req/s per ztunnel: %s (%.3f; both together %.3f)",
			benchkit.Verdict(vcpuEach <= 0.06), vcpuEach, amb.vcpuAtRate/perK))
		out = append(out, fmt.Sprintf("<= 12 MB per 1000 req/s per ztunnel (RSS at that rate): %s (%.1f MB peak per ztunnel)",
			benchkit.Verdict(float64(maxRSS)/perK <= 12<<20), float64(maxRSS)/perK/(1<<20)))
	}
	if len(amb.perConn) > 0 {
		worst := max(amb.perConn[0], amb.perConn[len(amb.perConn)-1])
		out = append(out, fmt.Sprintf("<= 8 KB per idle connection per ztunnel: %s (worst side %.1f KB; both together %.1f KB)",
			benchkit.Verdict(worst <= 8*1024), worst/1024, (amb.perConn[0]+amb.perConn[len(amb.perConn)-1])/1024))
	}
	if amb.podsRSS > 0 {
		line := fmt.Sprintf("RSS < 30 MB with %d pods: %s (%.1f MB)", cfg.pods, benchkit.Verdict(amb.podsRSS < 30<<20), float64(amb.podsRSS)/(1<<20))
		if cfg.pods != 100 {
			line += " — measured with fewer than the target's 100 pods"
		}
		out = append(out, line)
	}
	return out
}
