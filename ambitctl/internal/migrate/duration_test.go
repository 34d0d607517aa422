package migrate

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		in   time.Duration
		want string
		ok   bool
	}{
		{10 * time.Second, "10s", true},
		{90 * time.Second, "90s", true},
		{2 * time.Minute, "2m", true},
		{3 * time.Hour, "3h", true},
		{1500 * time.Millisecond, "1500ms", true},
		{100000 * time.Second, "", false},
		{time.Duration(99999) * time.Second, "99999s", true},
		{500 * time.Microsecond, "", false},
		{0, "0s", true},
		{-time.Second, "", false},
	} {
		got, ok := duration(durationpb.New(c.in))
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("duration(%v) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
