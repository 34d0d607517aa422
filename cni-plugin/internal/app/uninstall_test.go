package app

import (
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestUninstallDecision(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "daemonsets"}
	now := metav1.Now()
	cases := []struct {
		name string
		ds   *appsv1.DaemonSet
		err  error
		want bool
	}{
		{"DaemonSet exists: restart", &appsv1.DaemonSet{}, nil, false},
		{"DaemonSet being deleted", &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, nil, true},
		{"DaemonSet gone", nil, apierrors.NewNotFound(gr, "ambit-node-agent"), true},
		{"ServiceAccount gone", nil, apierrors.NewUnauthorized("token revoked"), true},
		{"RBAC gone", nil, apierrors.NewForbidden(gr, "ambit-node-agent", errors.New("no rule")), true},
		{"API server unreachable", nil, errors.New("dial tcp 10.96.0.1:443: connect: connection refused"), false},
		{"API server error", nil, apierrors.NewInternalError(errors.New("etcd")), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := uninstallDecision(tc.ds, tc.err)
			if got != tc.want || why == "" {
				t.Fatalf("uninstallDecision = %v (%q), want %v", got, why, tc.want)
			}
		})
	}
}
