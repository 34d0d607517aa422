package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1)
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{ms(7)}, 99, ms(7)},
		{"median of four is the second", []time.Duration{ms(1), ms(2), ms(3), ms(4)}, 50, ms(2)},
		{"p99 of 100 is the second largest", hundred, 99, ms(99)},
		{"p90 of 100", hundred, 90, ms(90)},
		{"p100 is the max", hundred, 100, ms(100)},
		{"tiny p is the min", hundred, 0.001, ms(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarizeDoesNotReorder(t *testing.T) {
	in := []time.Duration{ms(3), ms(1), ms(2)}
	s := summarize(in)
	if s.n != 3 || s.p50 != ms(2) || s.max != ms(3) {
		t.Errorf("summarize = %+v", s)
	}
	if !slices.Equal(in, []time.Duration{ms(3), ms(1), ms(2)}) {
		t.Errorf("summarize reordered its input: %v", in)
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	writeTable(&b, []chainResult{
		{"base", summary{n: 2, p50: ms(10), p90: ms(11), p99: ms(12), max: ms(13)}},
		{"on", summary{n: 2, p50: ms(25), p90: ms(30), p99: ms(40), max: ms(41)}},
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table has %d lines:\n%s", len(lines), b.String())
	}
	for _, tc := range []struct{ name, line, want string }{
		{"baseline has no added", lines[2], "| base | 2 | 10.0 | 11.0 | 12.0 | 13.0 | — | — |"},
		{"added vs baseline", lines[3], "| on | 2 | 25.0 | 30.0 | 40.0 | 41.0 | +15.0 | +28.0 |"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.line != tc.want {
				t.Errorf("got  %s\nwant %s", tc.line, tc.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	base := summary{p99: ms(100)}
	for _, tc := range []struct {
		name string
		p99  time.Duration
		want string
	}{
		{"under", ms(140), "MET (+40.0 ms)"},
		{"at the target", ms(150), "MET (+50.0 ms)"},
		{"over", ms(151), "NOT MET (+51.0 ms)"},
		{"faster than baseline", ms(90), "MET (-10.0 ms)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := verdict(base, summary{p99: tc.p99}, 50*time.Millisecond)
			if !strings.HasSuffix(got, ": "+tc.want) {
				t.Errorf("verdict = %q, want suffix %q", got, tc.want)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	order := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name string
		k    int
		want []string
	}{
		{"zero", 0, []string{"a", "b", "c"}},
		{"one", 1, []string{"b", "c", "a"}},
		{"wraps", 5, []string{"c", "a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rotate(order, tc.k); !slices.Equal(got, tc.want) {
				t.Errorf("rotate(%d) = %v, want %v", tc.k, got, tc.want)
			}
		})
	}
	if !slices.Equal(order, []string{"a", "b", "c"}) {
		t.Errorf("rotate changed its input: %v", order)
	}
}

func TestShellQuote(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain", []string{"go", "run", "./bench/cniadd", "-n", "100"}, "go run ./bench/cniadd -n 100"},
		{"space", []string{"a b"}, "'a b'"},
		{"quote", []string{"it's"}, `'it'\''s'`},
		{"empty", []string{""}, "''"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shellQuote(tc.args); got != tc.want {
				t.Errorf("shellQuote(%q) = %s, want %s", tc.args, got, tc.want)
			}
		})
	}
}

func TestCountInWindows(t *testing.T) {
	ts := []uint64{50, 10, 20, 20, 30}
	for _, tc := range []struct {
		name string
		w    [2]uint64
		want int
	}{
		{"bounds included", [2]uint64{10, 30}, 4},
		{"duplicates at the upper bound", [2]uint64{11, 20}, 2},
		{"empty window", [2]uint64{31, 49}, 0},
		{"one at the lower bound", [2]uint64{50, 60}, 1},
		{"before everything", [2]uint64{0, 5}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := countInWindows(ts, [][2]uint64{tc.w}); got[0] != tc.want {
				t.Errorf("count in %v = %d, want %d", tc.w, got[0], tc.want)
			}
		})
	}
}

func TestMedianInt(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    []int
		want int
	}{
		{"none", nil, 0},
		{"odd", []int{37, 3, 4}, 4},
		{"even takes the lower", []int{4, 3, 37, 38}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := medianInt(tc.v); got != tc.want {
				t.Errorf("medianInt(%v) = %d, want %d", tc.v, got, tc.want)
			}
		})
	}
}
