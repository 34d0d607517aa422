package migrate

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// duration formats d as a Gateway API Duration (GEP-2257: [0-9]{1,5}
// followed by h, m, s or ms, up to four times), which Ambit's CRDs also
// accept: whole seconds as "Ns" (or "Nm"/"Nh" when exact), else "Nms";
// zero is "0s" (for a timeout: none).
// ok is false when d is not a whole number of milliseconds or too long.
func duration(d *durationpb.Duration) (string, bool) {
	v := d.AsDuration()
	switch {
	case v == 0:
		return "0s", true
	case v < 0 || v%time.Millisecond != 0:
		return "", false
	case v%time.Hour == 0:
		return fmt.Sprintf("%dh", v/time.Hour), v/time.Hour < 100000
	case v%time.Minute == 0 && v/time.Minute < 100000:
		return fmt.Sprintf("%dm", v/time.Minute), true
	case v%time.Second == 0 && v/time.Second < 100000:
		return fmt.Sprintf("%ds", v/time.Second), true
	default:
		return fmt.Sprintf("%dms", v/time.Millisecond), v/time.Millisecond < 100000
	}
}

// setDuration sets m[key] to d as a Gateway API Duration, or reports
// field when d cannot be one. A nil d sets nothing.
func (e *entry) setDuration(m map[string]any, key, field string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if v, ok := duration(d); ok {
		m[key] = v
	} else {
		e.gap(field, fmt.Sprintf("%v: durations convert to whole milliseconds, at most 99999 of a unit (h, m, s or ms)", d.AsDuration()))
	}
}
