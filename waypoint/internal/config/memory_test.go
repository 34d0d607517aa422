package config

import "testing"

func TestSoftMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mib        int
		goMemLimit bool
		cgroup     string
		want       int64
	}{
		{"default: none", DefaultSoftMemoryLimitMiB, false, "max\n", 0},
		{"flag, no container limit", 24, false, "max\n", 24 << 20},
		{"flag, cgroup unreadable", 24, false, "", 24 << 20},
		{"GOMEMLIMIT wins", 24, true, "max\n", 0},
		{"GOMEMLIMIT wins over a container limit", 64, true, "20971520\n", 0},
		{"disabled", 0, false, "max\n", 0},
		{"disabled even with a container limit", 0, false, "20971520\n", 0},
		{"larger container limit keeps the flag", 24, false, "536870912\n", 24 << 20},
		{"smaller container limit lowers it to 90 %", 24, false, "20971520\n", 20971520 / 10 * 9},
		{"garbage in memory.max is ignored", 32, false, "lots\n", 32 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SoftMemoryLimit(tc.mib, tc.goMemLimit, tc.cgroup)
			if got.Bytes != tc.want {
				t.Errorf("SoftMemoryLimit(%d, %v, %q) = %d (%s), want %d", tc.mib, tc.goMemLimit, tc.cgroup, got.Bytes, got.Source, tc.want)
			}
			if got.Source == "" {
				t.Error("no source")
			}
		})
	}
}
