package networkingv1alpha1

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/api/internal/crdtest"
)

// enums are the allowed values of the Go string types the schemas restrict
// with an enum.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[LBAlgorithm]():            {string(LBRoundRobin), string(LBLeastRequest), string(LBEWMA)},
	reflect.TypeFor[metav1.ConditionStatus](): {string(metav1.ConditionTrue), string(metav1.ConditionFalse), string(metav1.ConditionUnknown)},
}

func TestCRDs(t *testing.T) {
	root := crdtest.Check(t, crdtest.Want{
		File: "networking.ambit.dev_backendpolicies.yaml", Group: GroupName, Version: SchemeGroupVersion.Version,
		Kind: "BackendPolicy", ListKind: "BackendPolicyList", Plural: "backendpolicies", Obj: BackendPolicy{},
		Columns: map[string]string{"Targets": ".spec.targetRefs[*].name", "Age": ".metadata.creationTimestamp"},
		Enums:   enums,
	})
	if got := crdtest.Lookup(t, root, "spec", "outlierDetection", "maxEjectionPercent"); got["minimum"] != 0.0 || got["maximum"] != 100.0 {
		t.Errorf("maxEjectionPercent bounds %v-%v, want 0-100", got["minimum"], got["maximum"])
	}
	crdtest.Check(t, crdtest.Want{
		File: "networking.ambit.dev_httpfaults.yaml", Group: GroupName, Version: SchemeGroupVersion.Version,
		Kind: HTTPFaultKind, ListKind: "HTTPFaultList", Plural: "httpfaults", Obj: HTTPFault{},
		Columns:  map[string]string{"Delay": ".spec.delay.fixedDelay", "Abort": ".spec.abort.httpStatus", "Age": ".metadata.creationTimestamp"},
		Enums:    enums,
		NoStatus: true,
	})
}
