package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultSoftMemoryLimitMiB is the default Go soft memory limit of the
// waypoint (--soft-memory-limit-mib): none. The waypoint's live heap at
// 1000 req/s is about 10 MB (bench/l7); without a limit the GC lets the
// heap grow to twice that and the RSS peaks near 48 MB. 24 MiB keeps the
// peak under 40 MB at the same CPU, but on the loaded 2-vCPU bench machine
// it also made the waypoint's p50 latency jump from 2-3 ms to 13-29 ms in
// 5 of 9 runs (28 and 32 MiB too), against 0 of 7 runs without a limit
// (docs/benchmarks.md): a limit near the waypoint's own footprint makes the
// GC run all the time. So it is opt-in until a quiet machine says better.
const DefaultSoftMemoryLimitMiB = 0

// cgroupMemoryMax is the container's memory limit (cgroup v2).
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// MemoryLimit is the soft memory limit to give the Go runtime
// (runtime/debug.SetMemoryLimit) and where it comes from.
type MemoryLimit struct {
	Bytes  int64  // 0: leave the runtime's limit alone
	Source string // for the log
}

// SoftMemoryLimit decides the Go soft memory limit from the flag
// (mib, --soft-memory-limit-mib), whether GOMEMLIMIT is set, and the
// container's cgroup memory.max (its contents, "" if unreadable):
//   - GOMEMLIMIT set: the runtime already applied it, it wins;
//   - mib 0: no limit (GOGC alone, as Go's default);
//   - else mib MiB, lowered to 90 % of the container's memory limit when
//     that is smaller, so the GC works harder before the kernel OOM-kills.
//
// A soft limit only makes the GC run earlier: when the live heap itself
// outgrows it (many connections), the GC runs more often — Go caps that
// at about half the CPU — rather than failing; raise the flag then.
func SoftMemoryLimit(mib int, goMemLimitSet bool, cgroupMax string) MemoryLimit {
	if goMemLimitSet {
		return MemoryLimit{Source: "GOMEMLIMIT"}
	}
	if mib <= 0 {
		return MemoryLimit{Source: "none (--soft-memory-limit-mib 0)"}
	}
	l := MemoryLimit{Bytes: int64(mib) << 20, Source: "--soft-memory-limit-mib"}
	if c, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64); err == nil && c > 0 {
		if c90 := c / 10 * 9; c90 < l.Bytes {
			l = MemoryLimit{Bytes: c90, Source: fmt.Sprintf("90%% of the container's memory limit (%d bytes)", c)}
		}
	}
	return l
}

// SoftMemoryLimitFromOS is SoftMemoryLimit for this process: c's flag,
// the GOMEMLIMIT environment variable and the cgroup's memory.max.
func (c Config) SoftMemoryLimitFromOS() MemoryLimit {
	_, set := os.LookupEnv("GOMEMLIMIT")
	cg, _ := os.ReadFile(cgroupMemoryMax)
	return SoftMemoryLimit(c.SoftMemoryLimitMiB, set, string(cg))
}
