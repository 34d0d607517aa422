package kube

import (
	"context"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/pkg/enrol"
)

func TestLookup(t *testing.T) {
	ambient := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-1", Labels: map[string]string{"app": "cart"}, Annotations: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers:     []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}},
		},
	}
	tests := []struct {
		name    string
		objects []runtime.Object
		wantNS  enrol.Namespace
		wantErr string
	}{
		{name: "namespace and pod", objects: []runtime.Object{ambient, pod}, wantNS: enrol.Namespace{Labels: ambient.Labels}},
		{name: "namespace missing counts as unlabelled", objects: []runtime.Object{pod}},
		{name: "pod missing is an error", objects: []runtime.Object{ambient}, wantErr: `getting pod shop/cart-1 from the API server with the kubeconfig /kc`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewPodLookupFromClient(fake.NewClientset(tt.objects...), "/kc")
			ns, p, err := l.Lookup(context.Background(), "shop", "cart-1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := enrol.Pod{Namespace: "shop", Labels: pod.Labels, Annotations: pod.Annotations,
				Containers: []string{"app", "istio-proxy"}, InitContainers: []string{"init"}}
			if !reflect.DeepEqual(ns, tt.wantNS) || !reflect.DeepEqual(p, want) {
				t.Errorf("Lookup = %+v, %+v; want %+v, %+v", ns, p, tt.wantNS, want)
			}
		})
	}
}

func TestNewPodLookupBadKubeconfig(t *testing.T) {
	_, err := NewPodLookup(t.TempDir() + "/missing")
	if err == nil || !strings.Contains(err.Error(), "cannot use the kubeconfig") {
		t.Fatalf("err = %v, want one naming the kubeconfig", err)
	}
}
