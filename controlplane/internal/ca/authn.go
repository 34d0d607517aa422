package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
)

// ErrUnauthenticated is wrapped by every error that rejects the caller's
// credentials. The server maps it to UNAUTHENTICATED.
var ErrUnauthenticated = errors.New("unauthenticated")

const (
	tokenAudience = cav1alpha1.TokenAudience
	// Extra claims of pod-bound ServiceAccount tokens, as reported by a
	// TokenReview (k8s.io/apiserver/pkg/authentication/serviceaccount).
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
	// saUserPrefix starts the user name of a ServiceAccount:
	// system:serviceaccount:<namespace>:<name>.
	saUserPrefix = "system:serviceaccount:"
)

// bearerToken returns the ServiceAccount token from the incoming gRPC
// metadata ("authorization: Bearer <token>").
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(cav1alpha1.AuthorizationMetadataKey)
	switch {
	case len(vals) == 0:
		return "", fmt.Errorf("%w: no %q metadata; send %q followed by a ServiceAccount token with audience %q",
			ErrUnauthenticated, cav1alpha1.AuthorizationMetadataKey, cav1alpha1.BearerPrefix, tokenAudience)
	case len(vals) > 1:
		return "", fmt.Errorf("%w: %d %q metadata values; send exactly one", ErrUnauthenticated, len(vals), cav1alpha1.AuthorizationMetadataKey)
	}
	v := vals[0]
	n := len(cav1alpha1.BearerPrefix)
	if len(v) < n || !strings.EqualFold(v[:n], cav1alpha1.BearerPrefix) {
		return "", fmt.Errorf("%w: %q metadata does not start with %q", ErrUnauthenticated, cav1alpha1.AuthorizationMetadataKey, cav1alpha1.BearerPrefix)
	}
	tok := strings.TrimSpace(v[n:])
	if tok == "" {
		return "", fmt.Errorf("%w: empty bearer token", ErrUnauthenticated)
	}
	return tok, nil
}

// reviewToken asks the apiserver whether token is valid for the CA's
// audience and returns the caller it belongs to. Errors wrapping
// ErrUnauthenticated reject the token; other errors mean the review itself
// failed.
func reviewToken(ctx context.Context, kube kubernetes.Interface, token string) (Caller, error) {
	tr, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{tokenAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Caller{}, fmt.Errorf("TokenReview failed (can the control plane reach the apiserver, and may its ServiceAccount create tokenreviews.authentication.k8s.io?): %w", err)
	}
	return CallerFromReview(tr.Status)
}

// CallerFromReview turns a TokenReview result into a Caller. It rejects
// (wrapping ErrUnauthenticated) a token the apiserver did not authenticate,
// one not valid for the audience ambit-ca (the status must name it: an
// audience-agnostic answer is not enough), and one that does not belong to
// a ServiceAccount.
func CallerFromReview(st authnv1.TokenReviewStatus) (Caller, error) {
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Caller{}, fmt.Errorf("%w: the apiserver rejected the token: %s", ErrUnauthenticated, reason)
	}
	if !slices.Contains(st.Audiences, tokenAudience) {
		return Caller{}, fmt.Errorf("%w: the token is not valid for audience %q (its audiences matched %q); request a projected ServiceAccount token with audience %q",
			ErrUnauthenticated, tokenAudience, st.Audiences, tokenAudience)
	}
	user := st.User.Username
	rest, ok := strings.CutPrefix(user, saUserPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return Caller{}, fmt.Errorf("%w: the token belongs to user %q, not to a ServiceAccount", ErrUnauthenticated, user)
	}
	c := Caller{Namespace: ns, ServiceAccount: sa}
	if v := st.User.Extra[podNameExtra]; len(v) == 1 {
		c.PodName = v[0]
	}
	if v := st.User.Extra[podUIDExtra]; len(v) == 1 {
		c.PodUID = v[0]
	}
	return c, nil
}
