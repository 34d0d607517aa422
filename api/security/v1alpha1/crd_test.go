package securityv1alpha1

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/api/internal/crdtest"
)

// enums are the allowed values of the Go string types the schemas restrict
// with an enum.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[Action]():                 {string(ActionAllow), string(ActionDeny), string(ActionAudit)},
	reflect.TypeFor[MTLSMode]():               {string(MTLSModeUnset), string(MTLSModeStrict), string(MTLSModePermissive), string(MTLSModeDisable)},
	reflect.TypeFor[metav1.ConditionStatus](): {string(metav1.ConditionTrue), string(metav1.ConditionFalse), string(metav1.ConditionUnknown)},
}

func TestCRDs(t *testing.T) {
	for _, tc := range []struct {
		file, kind, listKind, plural string
		obj                          any
		columns                      map[string]string // printer column name -> jsonPath
	}{
		{
			file: "security.ambit.dev_authorizationpolicies.yaml", kind: "AuthorizationPolicy",
			listKind: "AuthorizationPolicyList", plural: "authorizationpolicies", obj: AuthorizationPolicy{},
			columns: map[string]string{"Action": ".spec.action", "Age": ".metadata.creationTimestamp"},
		},
		{
			file: "security.ambit.dev_peerauthentications.yaml", kind: "PeerAuthentication",
			listKind: "PeerAuthenticationList", plural: "peerauthentications", obj: PeerAuthentication{},
			columns: map[string]string{"Mode": ".spec.mtls.mode", "Age": ".metadata.creationTimestamp"},
		},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			root := crdtest.Check(t, crdtest.Want{
				File: tc.file, Group: GroupName, Version: SchemeGroupVersion.Version,
				Kind: tc.kind, ListKind: tc.listKind, Plural: tc.plural, Obj: tc.obj, Columns: tc.columns, Enums: enums,
			})
			if tc.kind == "AuthorizationPolicy" {
				action := crdtest.Lookup(t, root, "spec", "action")
				if action["default"] != string(ActionAllow) {
					t.Errorf("spec.action default = %v, want %s (Istio's default)", action["default"], ActionAllow)
				}
			}
		})
	}
}
