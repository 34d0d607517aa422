package benchkit

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{"plain", "1234 (ztunnel) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0 100 0 0", 325, false},
		{"command with spaces and parens", "42 (my (odd) cmd) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0", 10, false},
		{"truncated", "42 (x) R 1 2", 0, true},
		{"no command", "garbage", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatCPU(tc.stat)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseStatCPU = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    uint64
		wantErr bool
	}{
		{"present", "Name:\tztunnel\nVmPeak:\t  9000 kB\nVmRSS:\t   13824 kB\nThreads:\t7\n", 13824 * 1024, false},
		{"zombie has none", "Name:\tx\nState:\tZ (zombie)\n", 0, true},
		{"odd unit", "VmRSS:\t12 MB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVmRSS(tc.status)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseVmRSS = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tztunnel\nVmRSS:\t   16924 kB\nRssAnon:\t    2900 kB\nRssFile:\t   14024 kB\nRssShmem:\t       0 kB\n"
	tests := []struct {
		field   string
		want    uint64
		wantErr bool
	}{
		{"VmRSS", 16924 * 1024, false},
		{"RssAnon", 2900 * 1024, false},
		{"RssFile", 14024 * 1024, false},
		{"RssShmem", 0, false},
		{"Rss", 0, true}, // a prefix of other fields is not a field
		{"VmSwap", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			got, err := ParseStatusKB(status, tc.field)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseStatusKB(%s) = %d, %v; want %d, error %v", tc.field, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 1000; i++ {
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"p50 of 1..1000", s, 0.50, 500 * time.Microsecond},
		{"p99 of 1..1000", s, 0.99, 990 * time.Microsecond},
		{"p100", s, 1, 1000 * time.Microsecond},
		{"single sample", s[:1], 0.99, time.Microsecond},
		{"empty", nil, 0.5, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.samples, tc.q); got != tc.want {
				t.Errorf("Percentile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		want time.Duration
	}{
		{"odd, unsorted", ms(5, 1, 40), 5 * time.Millisecond},
		{"even takes the upper", ms(1, 2, 3, 4), 3 * time.Millisecond},
		{"one burst round does not move it", ms(1, 1, 90, 1, 1), time.Millisecond},
		{"empty", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Median(tc.in); got != tc.want {
				t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseIOSyscalls(t *testing.T) {
	tests := []struct {
		name         string
		io           string
		wantR, wantW uint64
		wantErr      bool
	}{
		{"proc format", "rchar: 6976\nwchar: 10\nsyscr: 10\nsyscw: 3\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n", 10, 3, false},
		{"missing syscw", "rchar: 1\nsyscr: 10\n", 0, 0, true},
		{"garbage value", "syscr: x\nsyscw: 1\n", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := ParseIOSyscalls(tc.io)
			if (err != nil) != tc.wantErr || r != tc.wantR || w != tc.wantW {
				t.Errorf("ParseIOSyscalls = %d, %d, %v; want %d, %d, error %v", r, w, err, tc.wantR, tc.wantW, tc.wantErr)
			}
		})
	}
}

// Meter reads this very process: CPU, RSS and system calls all move.
func TestMeterSelf(t *testing.T) {
	m := &Meter{PIDs: []int{os.Getpid()}}
	m.Segment(func() {
		f, err := os.CreateTemp(t.TempDir(), "m")
		if err != nil {
			t.Fatal(err)
		}
		for range 50 {
			_, _ = f.Write([]byte("x"))
		}
		f.Close()
		for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
		}
	})
	if m.Err != nil {
		t.Fatal(m.Err)
	}
	if m.Writes[0] < 50 {
		t.Errorf("%d write system calls counted, want at least the 50 made", m.Writes[0])
	}
	if m.Peak[0] == 0 {
		t.Error("no RSS sampled")
	}
	if m.Total() != m.CPU[0] {
		t.Errorf("Total %v != CPU of the one pid %v", m.Total(), m.CPU[0])
	}
}
