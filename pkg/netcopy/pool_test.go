package netcopy

import (
	"net/http/httputil"
	"testing"
)

var _ httputil.BufferPool = BufferPool{}

func TestBufferPool(t *testing.T) {
	var p BufferPool
	tests := []struct {
		name string
		put  []byte
	}{
		{"a pooled buffer", p.Get()},
		{"a resliced one", p.Get()[:10]},
		{"too small: dropped", make([]byte, 100)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p.Put(tc.put)
			if b := p.Get(); len(b) != BufSize {
				t.Errorf("Get after Put returned %d bytes, want %d", len(b), BufSize)
			}
		})
	}
	// A Get/Put cycle reuses the buffer: only the pool's pointer box is
	// allocated, never a new 32 KiB buffer.
	avg := testing.AllocsPerRun(200, func() { p.Put(p.Get()) })
	if avg > 1 {
		t.Errorf("%.1f allocations per Get/Put, want at most 1", avg)
	}
}
