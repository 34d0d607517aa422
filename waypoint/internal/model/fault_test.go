package model

import (
	"testing"
	"time"
)

func TestFaultDecide(t *testing.T) {
	delay := 200 * time.Millisecond
	abort := &Abort{HTTPStatus: 503}
	const half = PerMillion / 2
	for _, tc := range []struct {
		name           string
		f              *Fault
		delayN, abortN uint64
		wantDelay      time.Duration
		wantAbort      bool
		flags          string
	}{
		{"nil fault", nil, 0, 0, 0, false, ""},
		{"delay always", &Fault{Delay: &delay, DelayPerMillion: PerMillion}, PerMillion - 1, 0, delay, false, "DI"},
		{"delay never at 0%", &Fault{Delay: &delay, DelayPerMillion: 0}, 0, 0, 0, false, ""},
		{"delay half, below", &Fault{Delay: &delay, DelayPerMillion: half}, half - 1, 0, delay, false, "DI"},
		{"delay half, at the share", &Fault{Delay: &delay, DelayPerMillion: half}, half, 0, 0, false, ""},
		{"delay half, wraps modulo", &Fault{Delay: &delay, DelayPerMillion: half}, 3*PerMillion + 10, 0, delay, false, "DI"},
		{"abort half, below", &Fault{Abort: abort, AbortPerMillion: half}, 0, 499_999, 0, true, "FI"},
		{"abort half, above", &Fault{Abort: abort, AbortPerMillion: half}, 0, 500_001, 0, false, ""},
		{"both, independent numbers", &Fault{Delay: &delay, DelayPerMillion: half, Abort: abort, AbortPerMillion: half}, 1, PerMillion - 1, delay, false, "DI"},
		{"both applied", &Fault{Delay: &delay, DelayPerMillion: PerMillion, Abort: abort, AbortPerMillion: PerMillion}, 7, 7, delay, true, "DI,FI"},
		{"zero delay is no delay", &Fault{Delay: new(time.Duration), DelayPerMillion: PerMillion}, 0, 0, 0, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.f.Decide(tc.delayN, tc.abortN)
			if d.Delay != tc.wantDelay || (d.Abort != nil) != tc.wantAbort || d.Flags() != tc.flags {
				t.Errorf("Decide = delay %s abort %v flags %q, want %s %v %q", d.Delay, d.Abort, d.Flags(), tc.wantDelay, tc.wantAbort, tc.flags)
			}
		})
	}
}
