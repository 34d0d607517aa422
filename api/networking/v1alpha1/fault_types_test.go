package networkingv1alpha1

import (
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestHTTPFaultDecodeAndCopy(t *testing.T) {
	const doc = `
apiVersion: networking.ambit.dev/v1alpha1
kind: HTTPFault
metadata: {name: slow, namespace: demo}
spec:
  delay: {fixedDelay: 200ms, percentage: 50}
  abort: {httpStatus: 503, percentage: 10}
`
	var f HTTPFault
	if err := yaml.UnmarshalStrict([]byte(doc), &f); err != nil {
		t.Fatal(err)
	}
	if f.Spec.Delay.FixedDelay.Duration != 200*time.Millisecond || *f.Spec.Delay.Percentage != 50 ||
		*f.Spec.Abort.HTTPStatus != 503 || *f.Spec.Abort.Percentage != 10 || f.Spec.Abort.GRPCStatus != nil {
		t.Fatalf("decoded %+v", f.Spec)
	}
	cp := f.DeepCopy()
	*cp.Spec.Abort.HTTPStatus = 500
	*cp.Spec.Delay.Percentage = 1
	if *f.Spec.Abort.HTTPStatus != 503 || *f.Spec.Delay.Percentage != 50 {
		t.Error("DeepCopy shares pointers with the original")
	}
	l := &HTTPFaultList{Items: []HTTPFault{f}}
	if l.DeepCopyObject().(*HTTPFaultList).Items[0].Name != "slow" {
		t.Error("list copy lost its items")
	}
}
