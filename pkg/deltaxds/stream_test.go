package deltaxds

import "testing"

func TestTypeName(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"type.googleapis.com/envoy.config.listener.v3.Listener", "Listener"},
		{"type.googleapis.com/ambit.workload.v1alpha1.Address", "Address"},
		{"Plain", "Plain"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := TypeName(tc.url); got != tc.want {
				t.Fatalf("TypeName(%q) = %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}
