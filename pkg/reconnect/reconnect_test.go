package reconnect

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Sessions: fail, fail, progress then fail, fail; the fifth cancels.
	progress := []bool{false, false, true, false}
	var got []Ended
	runs := 0
	Loop(ctx, time.Millisecond, 4*time.Millisecond, func(context.Context) (bool, error) {
		runs++
		if runs > len(progress) {
			cancel()
			return false, errors.New("cancelled")
		}
		return progress[runs-1], errors.New("ended")
	}, func(e Ended) { got = append(got, e) })

	if runs != 5 {
		t.Fatalf("%d sessions ran, want 5", runs)
	}
	wantAttempts := []int{1, 2, 1, 2}
	if len(got) != len(wantAttempts) {
		t.Fatalf("ended called %d times, want %d (not for the session that ended with the context)", len(got), len(wantAttempts))
	}
	for i, e := range got {
		if e.Attempt != wantAttempts[i] || e.Progressed != progress[i] || e.Err == nil {
			t.Errorf("ended #%d = %+v, want attempt %d progressed %v", i, e, wantAttempts[i], progress[i])
		}
		if e.Wait <= 0 || e.Wait > 4*time.Millisecond {
			t.Errorf("ended #%d wait %v outside (0, max]", i, e.Wait)
		}
	}
}

func TestLoopStopsDuringWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Loop(ctx, time.Hour, time.Hour, func(context.Context) (bool, error) { return false, errors.New("down") },
			func(Ended) { cancel() })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Loop did not return when its context ended during the backoff")
	}
}
