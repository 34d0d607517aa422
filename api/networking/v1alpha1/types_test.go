package networkingv1alpha1

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func ptr[T any](v T) *T { return &v }

func TestDeepCopy(t *testing.T) {
	d := Duration("1s")
	p := &BackendPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
		Spec: BackendPolicySpec{
			TargetRefs: []BackendPolicyTargetRef{{Kind: "Service", Name: "echo", SectionName: "http"}},
			ConnectionPool: &ConnectionPool{
				TCP:  &TCPSettings{MaxConnections: ptr[int32](1), ConnectTimeout: &d},
				HTTP: &HTTPSettings{MaxPendingRequests: ptr[int32](2), MaxRequests: ptr[int32](3), MaxRequestsPerConnection: ptr[int32](4)},
			},
			OutlierDetection: &OutlierDetection{Consecutive5xxErrors: ptr[int32](5), ConsecutiveGatewayErrors: ptr[int32](6),
				Interval: &d, BaseEjectionTime: &d, MaxEjectionPercent: ptr[int32](7)},
			LoadBalancer: &LoadBalancer{Algorithm: LBEWMA, ChoiceCount: ptr[int32](8)},
		},
		Status: BackendPolicyStatus{Ancestors: []BackendPolicyAncestorStatus{{
			AncestorRef: BackendPolicyAncestorRef{Kind: "Service", Name: "echo"}, ControllerName: "c",
			Conditions: []metav1.Condition{{Type: ConditionAccepted, Status: metav1.ConditionTrue}},
		}}},
	}
	c := p.DeepCopy()
	if !reflect.DeepEqual(p, c) {
		t.Fatal("DeepCopy differs from the original")
	}
	*c.Spec.ConnectionPool.TCP.MaxConnections = 99
	*c.Spec.OutlierDetection.Interval = "9s"
	c.Spec.TargetRefs[0].Name = "other"
	c.Status.Ancestors[0].Conditions[0].Reason = "x"
	*c.Spec.LoadBalancer.ChoiceCount = 99
	if *p.Spec.ConnectionPool.TCP.MaxConnections != 1 || *p.Spec.OutlierDetection.Interval != "1s" || p.Spec.TargetRefs[0].Name != "echo" ||
		p.Status.Ancestors[0].Conditions[0].Reason != "" || *p.Spec.LoadBalancer.ChoiceCount != 8 {
		t.Errorf("changing the copy changed the original: %+v", p.Spec)
	}
	var l runtime.Object = (&BackendPolicyList{Items: []BackendPolicy{*p}}).DeepCopyObject()
	if !reflect.DeepEqual(l.(*BackendPolicyList).Items[0], *p) {
		t.Error("BackendPolicyList.DeepCopyObject differs")
	}
}

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"BackendPolicy", "BackendPolicyList"} {
		if !s.Recognizes(SchemeGroupVersion.WithKind(kind)) {
			t.Errorf("the scheme does not know %s", kind)
		}
	}
}
