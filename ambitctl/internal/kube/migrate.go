package kube

import (
	"context"
	"fmt"

	istio "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"ambit.dev/ambitctl/internal/migrate"
)

// httpRouteCRD is the name of Gateway API's HTTPRoute CRD.
const httpRouteCRD = "httproutes.gateway.networking.k8s.io"

// ReadMigrationInputs reads what migrate plan converts: namespace's Istio
// VirtualServices, DestinationRules and Sidecars (networking.istio.io/v1),
// AuthorizationPolicies and PeerAuthentications (security.istio.io/v1)
// and its Services, and the cluster's HTTPRoute CRD (does it keep
// rules[].retry?). A resource the apiserver does not serve (404: Istio's
// CRDs absent or older than 1.22) is listed in Inputs.Unserved, not an
// error.
func ReadMigrationInputs(ctx context.Context, ic istio.Interface, typed kubernetes.Interface, dyn dynamic.Interface, namespace string) (migrate.Inputs, error) {
	in := migrate.Inputs{Namespace: namespace}
	if _, err := typed.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return in, fmt.Errorf("namespace %s does not exist (kubectl get namespaces lists them)", namespace)
		}
		return in, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	opts := metav1.ListOptions{}
	net, sec := ic.NetworkingV1(), ic.SecurityV1()
	// Each read lists one resource; a 404 means it is not served.
	read := func(resource string, list func() error) error {
		err := list()
		switch {
		case err == nil:
			return nil
		case apierrors.IsNotFound(err):
			in.Unserved = append(in.Unserved, resource)
			return nil
		default:
			return fmt.Errorf("listing %s in namespace %s: %w (migrate plan needs get on the namespace and list on its Istio resources and Services)", resource, namespace, err)
		}
	}
	steps := []struct {
		resource string
		list     func() error
	}{
		{"virtualservices.networking.istio.io/v1", func() error {
			l, err := net.VirtualServices(namespace).List(ctx, opts)
			if err == nil {
				in.VirtualServices = l.Items
			}
			return err
		}},
		{"destinationrules.networking.istio.io/v1", func() error {
			l, err := net.DestinationRules(namespace).List(ctx, opts)
			if err == nil {
				in.DestinationRules = l.Items
			}
			return err
		}},
		{"sidecars.networking.istio.io/v1", func() error {
			l, err := net.Sidecars(namespace).List(ctx, opts)
			if err == nil {
				in.Sidecars = l.Items
			}
			return err
		}},
		{"authorizationpolicies.security.istio.io/v1", func() error {
			l, err := sec.AuthorizationPolicies(namespace).List(ctx, opts)
			if err == nil {
				in.AuthorizationPolicies = l.Items
			}
			return err
		}},
		{"peerauthentications.security.istio.io/v1", func() error {
			l, err := sec.PeerAuthentications(namespace).List(ctx, opts)
			if err == nil {
				in.PeerAuthentications = l.Items
			}
			return err
		}},
	}
	for _, s := range steps {
		if err := read(s.resource, s.list); err != nil {
			return in, err
		}
	}
	svcs, err := typed.CoreV1().Services(namespace).List(ctx, opts)
	if err != nil {
		return in, fmt.Errorf("listing Services in namespace %s: %w (migrate plan needs list on them)", namespace, err)
	}
	in.Services = svcs.Items
	crd, err := dyn.Resource(CRDResource).Get(ctx, httpRouteCRD, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		crd = nil
	case err != nil:
		return in, fmt.Errorf("reading CRD %s: %w (migrate plan reads it to tell whether HTTPRoute retries are kept)", httpRouteCRD, err)
	}
	in.HTTPRouteCRD = migrate.HTTPRouteCRDChannel(crd)
	return in, nil
}
