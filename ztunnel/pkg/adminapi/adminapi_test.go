package adminapi

import (
	"testing"
	"time"
)

func TestCertState(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(time.Hour)
	tests := []struct {
		name string
		now  time.Time
		want string
	}{
		{"before", nb.Add(-time.Second), CertNotYetValid},
		{"at not-before", nb, CertValid},
		{"inside", nb.Add(time.Minute), CertValid},
		{"at not-after", na, CertValid},
		{"after", na.Add(time.Second), CertExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := CertState(nb, na, tc.now); got != tc.want {
				t.Fatalf("CertState = %s, want %s", got, tc.want)
			}
		})
	}
}
