package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// summary is the distribution of one chain's ADD wall times.
type summary struct {
	n                  int
	p50, p90, p99, max time.Duration
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest sample with at least p % of the samples at or
// below it. With 100 samples, p99 is the second largest.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// summarize returns the percentiles of samples (which it does not modify).
func summarize(samples []time.Duration) summary {
	s := slices.Clone(samples)
	slices.Sort(s)
	out := summary{n: len(s)}
	if len(s) == 0 {
		return out
	}
	out.p50, out.p90, out.p99, out.max = percentile(s, 50), percentile(s, 90), percentile(s, 99), s[len(s)-1]
	return out
}

// chainResult is one row of the table.
type chainResult struct {
	name string
	sum  summary
}

// msec formats d in milliseconds with one decimal.
func msec(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

// added formats d - base as a signed number of milliseconds.
func added(d, base time.Duration) string {
	return fmt.Sprintf("%+.1f", float64(d-base)/float64(time.Millisecond))
}

// writeTable prints the markdown table of rows; the first row is the
// baseline the "added" columns compare with.
func writeTable(w io.Writer, rows []chainResult) {
	fmt.Fprintln(w, "| chain | n | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | added p50 (ms) | added p99 (ms) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for i, r := range rows {
		addP50, addP99 := "—", "—"
		if i > 0 {
			addP50, addP99 = added(r.sum.p50, rows[0].sum.p50), added(r.sum.p99, rows[0].sum.p99)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", r.name, r.sum.n,
			msec(r.sum.p50), msec(r.sum.p90), msec(r.sum.p99), msec(r.sum.max), addP50, addP99)
	}
}

// verdict compares the enrolled chain's added p99 with the target.
func verdict(base, enrolled summary, target time.Duration) string {
	d := enrolled.p99 - base.p99
	state := "MET"
	if d > target {
		state = "NOT MET"
	}
	return fmt.Sprintf("added p99 of an enrolled pod <= %s: %s (%s ms)", target, state, added(enrolled.p99, base.p99))
}

// rotate returns order rotated left by k: iteration i measures the chains
// in rotate(order, i), so that each chain runs first, second and last
// equally often.
func rotate[T any](order []T, k int) []T {
	if len(order) == 0 {
		return nil
	}
	k %= len(order)
	return append(slices.Clone(order[k:]), order[:k]...)
}

// shellQuote quotes args for a POSIX shell when they need it, to print the
// exact command line.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// countInWindows returns how many of the timestamps ts fall in each
// [from, to] window (bounds included).
func countInWindows(ts []uint64, windows [][2]uint64) []int {
	s := slices.Clone(ts)
	slices.Sort(s)
	out := make([]int, len(windows))
	for i, w := range windows {
		lo, _ := slices.BinarySearch(s, w[0])
		hi, found := slices.BinarySearch(s, w[1])
		for found && hi < len(s) && s[hi] == w[1] {
			hi++
		}
		out[i] = hi - lo
	}
	return out
}

// medianInt returns the median of v (the lower one of an even count), 0
// for none.
func medianInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
