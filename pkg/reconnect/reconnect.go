// Package reconnect is the retry loop of long-lived client connections:
// the delta xDS streams of ztunnel and the waypoint to the control plane,
// and ztunnel's ZDS connection to the node agent. They keep serving what
// they have while disconnected and reconnect with capped, jittered
// exponential backoff that starts over after a session that made progress.
package reconnect

import (
	"context"
	"math/rand/v2"
	"time"

	"ambit.dev/pkg/identity"
)

// Ended describes a session that ended while the loop's context was live.
type Ended struct {
	// Err is the session's error.
	Err error
	// Progressed is the session's own report (it got an answer), which
	// restarts the backoff.
	Progressed bool
	// Attempt counts the sessions since the last one that progressed.
	Attempt int
	// Wait is the backoff before the next session.
	Wait time.Duration
}

// Loop runs session until ctx is done, one at a time. After each session
// that ended while ctx is live it calls ended (to log it), then waits
// Ended.Wait (identity.Backoff between base and max). It returns when ctx
// is done, with no session running.
func Loop(ctx context.Context, base, max time.Duration, session func(context.Context) (progressed bool, err error), ended func(Ended)) {
	attempt := 0
	for {
		progressed, err := session(ctx)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			attempt = 0
		}
		attempt++
		wait := identity.Backoff(base, max, attempt, rand.Float64())
		ended(Ended{Err: err, Progressed: progressed, Attempt: attempt, Wait: wait})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
