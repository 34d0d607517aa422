package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// ParseStatCPU returns utime+stime (clock ticks) from the contents of
// /proc/<pid>/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted after its closing parenthesis.
func ParseStatCPU(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command field in %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields after the command in %q", len(f), stat)
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime %q: %w", f[11], err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime %q: %w", f[12], err)
	}
	return u + s, nil
}

// ParseVmRSS returns VmRSS in bytes from the contents of /proc/<pid>/status.
func ParseVmRSS(status string) (uint64, error) { return ParseStatusKB(status, "VmRSS") }

// ParseStatusKB returns the kB field (VmRSS, RssAnon, RssFile, ...) of the
// contents of /proc/<pid>/status, in bytes.
func ParseStatusKB(status, field string) (uint64, error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", field, sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s %q: %w", field, f[0], err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no %s line (is the process a zombie?)", field)
}

// CPUSeconds returns the CPU time (user+system, all threads) pids have used.
func CPUSeconds(pids []int) (float64, error) {
	var ticks uint64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("read CPU time of proxy pid %d (did it exit?): %w", pid, err)
		}
		t, err := ParseStatCPU(string(b))
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		ticks += t
	}
	return float64(ticks) / clockTicks, nil
}

// RSSBytes returns the resident set size of each pid.
func RSSBytes(pids []int) ([]uint64, error) { return statusBytes(pids, "VmRSS") }

// FileRSSBytes returns the file-backed part of each pid's resident set
// (RssFile: mostly the binary's own text and read-only data, shared with
// the page cache and with other processes of the same binary).
func FileRSSBytes(pids []int) ([]uint64, error) { return statusBytes(pids, "RssFile") }

func statusBytes(pids []int, field string) ([]uint64, error) {
	out := make([]uint64, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return nil, fmt.Errorf("read %s of proxy pid %d (did it exit?): %w", field, pid, err)
		}
		if out[i], err = ParseStatusKB(string(b), field); err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, err)
		}
	}
	return out, nil
}

// RSSPeak samples the RSS of pids every interval until stopped and keeps
// the peak of each.
type RSSPeak struct {
	mu   sync.Mutex
	peak []uint64
	stop context.CancelFunc
	done chan struct{}
}

func StartRSSPeak(pids []int, interval time.Duration) *RSSPeak {
	ctx, cancel := context.WithCancel(context.Background())
	p := &RSSPeak{peak: make([]uint64, len(pids)), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if r, err := RSSBytes(pids); err == nil {
				p.mu.Lock()
				for i := range r {
					p.peak[i] = max(p.peak[i], r[i])
				}
				p.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Stop ends sampling and returns the peaks.
func (p *RSSPeak) Stop() []uint64 {
	p.stop()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.peak)
}

// Percentile returns the q-quantile (0 < q <= 1) of sorted samples by the
// nearest-rank method.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// MachineFacts describes the host for the report header.
func MachineFacts() []string {
	var facts []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "model name"); ok {
				facts = append(facts, "CPU: "+strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":")))
				break
			}
		}
	}
	facts = append(facts, fmt.Sprintf("vCPUs: %d", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			facts = append(facts, "memory: "+strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " "))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		facts = append(facts, "kernel: "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			facts = append(facts, "load average at start: "+strings.Join(f[:3], " "))
		}
	}
	facts = append(facts, "bench: "+runtime.Version())
	return facts
}

// SetNice sets the nice value of every thread of the process; threads and
// processes started later inherit it (Linux keeps nice per thread).
func SetNice(nice int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("set nice %d on thread %d: %w", nice, tid, err)
		}
	}
	return nil
}

// CurrentNice returns the calling thread's nice value (the raw syscall
// returns 20 - nice).
func CurrentNice() int {
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return 0
	}
	return 20 - p
}

// ProblemLines returns up to 5 distinct warning or error lines of a
// proxy's log (HAProxy [WARNING]/[ALERT], slog WARN/ERROR).
func ProblemLines(out string) []string {
	seen := map[string]bool{}
	var lines []string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if !strings.Contains(line, "[WARNING]") && !strings.Contains(line, "[ALERT]") &&
			!strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") &&
			!strings.Contains(line, `"level":"WARN"`) && !strings.Contains(line, `"level":"ERROR"`) {
			continue
		}
		if len(line) > 300 {
			line = line[:300] + "…"
		}
		if !seen[line] {
			seen[line] = true
			lines = append(lines, "proxy log: "+line)
		}
		if len(lines) == 5 {
			break
		}
	}
	return lines
}

// RaiseNoFile raises RLIMIT_NOFILE as far as allowed (to 2^20 with
// CAP_SYS_RESOURCE, else to the hard limit) and returns the limit; child
// processes (proxies, the idle client) inherit it.
func RaiseNoFile() (uint64, error) {
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		return lim.Cur, nil
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE to its hard limit %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// Median returns the median of ds (the upper one for an even count).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// Meter accumulates the CPU time and RSS peak of processes over the
// segments of a load phase.
type Meter struct {
	PIDs []int
	CPU  []float64 // CPU seconds per pid, summed over segments
	Peak []uint64  // peak RSS per pid, sampled every 100 ms
	// Reads and Writes are the read and write system calls per pid
	// (syscr, syscw of /proc/<pid>/io), summed over segments.
	Reads, Writes []uint64
	Err           error // a pid could not be read (it exited)
}

// Segment runs fn while measuring.
func (m *Meter) Segment(fn func()) {
	if len(m.PIDs) == 0 {
		fn()
		return
	}
	sampler := StartRSSPeak(m.PIDs, 100*time.Millisecond)
	io0, errIO0 := syscallsEach(m.PIDs)
	c0, err0 := cpuEach(m.PIDs)
	fn()
	c1, err1 := cpuEach(m.PIDs)
	io1, errIO1 := syscallsEach(m.PIDs)
	peak := sampler.Stop()
	if err := errors.Join(err0, err1, errIO0, errIO1); err != nil {
		m.Err = err
		return
	}
	if m.CPU == nil {
		n := len(m.PIDs)
		m.CPU, m.Peak, m.Reads, m.Writes = make([]float64, n), make([]uint64, n), make([]uint64, n), make([]uint64, n)
	}
	for i := range m.PIDs {
		m.CPU[i] += c1[i] - c0[i]
		m.Peak[i] = max(m.Peak[i], peak[i])
		m.Reads[i] += io1[i][0] - io0[i][0]
		m.Writes[i] += io1[i][1] - io0[i][1]
	}
}

// Total is the CPU seconds of all pids.
func (m *Meter) Total() float64 {
	var t float64
	for _, c := range m.CPU {
		t += c
	}
	return t
}

func cpuEach(pids []int) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		c, err := CPUSeconds([]int{pid})
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// ParseIOSyscalls returns syscr and syscw (read and write system calls)
// from the contents of /proc/<pid>/io.
func ParseIOSyscalls(io string) (reads, writes uint64, err error) {
	var haveR, haveW bool
	for line := range strings.Lines(io) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "syscr" && k != "syscw") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s %q: %w", k, v, err)
		}
		if k == "syscr" {
			reads, haveR = n, true
		} else {
			writes, haveW = n, true
		}
	}
	if !haveR || !haveW {
		return 0, 0, fmt.Errorf("no syscr/syscw lines in %q", io)
	}
	return reads, writes, nil
}

func syscallsEach(pids []int) ([][2]uint64, error) {
	out := make([][2]uint64, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			return nil, fmt.Errorf("read system call counts of proxy pid %d (did it exit?): %w", pid, err)
		}
		if out[i][0], out[i][1], err = ParseIOSyscalls(string(b)); err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, err)
		}
	}
	return out, nil
}
