package ca

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
)

func TestCallerFromReview(t *testing.T) {
	tokens := testTokens()
	tests := []struct {
		name    string
		status  authnv1.TokenReviewStatus
		want    Caller
		wantMsg string // non-empty: must fail with ErrUnauthenticated and this text
	}{
		{name: "pod-bound ztunnel token", status: tokens["zt-a"],
			want: Caller{Namespace: testNS, ServiceAccount: "ztunnel", PodName: "ztunnel-a", PodUID: "uid-zt-a"}},
		{name: "token not bound to a pod", status: tokens["zt-unbound"],
			want: Caller{Namespace: testNS, ServiceAccount: "ztunnel"}},
		{name: "rejected by the apiserver", status: authnv1.TokenReviewStatus{Error: "token has expired"},
			wantMsg: "the apiserver rejected the token: token has expired"},
		{name: "not authenticated, no reason", status: authnv1.TokenReviewStatus{},
			wantMsg: "not authenticated"},
		{name: "wrong audience", status: tokens["wrong-aud"], wantMsg: `not valid for audience "ambit-ca"`},
		{name: "audience-agnostic answer", status: tokens["agnostic-aud"], wantMsg: `not valid for audience "ambit-ca"`},
		{name: "a user, not a service account", status: tokens["user"], wantMsg: `user "alice", not to a ServiceAccount`},
		{name: "malformed service account user", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{tokenAudience},
			User: authnv1.UserInfo{Username: "system:serviceaccount:ns1"}}, wantMsg: "not to a ServiceAccount"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CallerFromReview(tc.status)
			if tc.wantMsg == "" {
				if err != nil || got != tc.want {
					t.Fatalf("CallerFromReview = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("CallerFromReview error = %v; want ErrUnauthenticated containing %q", err, tc.wantMsg)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		md      metadata.MD
		want    string
		wantMsg string
	}{
		{name: "bearer token", md: metadata.Pairs("authorization", "Bearer abc.def"), want: "abc.def"},
		{name: "lower-case scheme", md: metadata.Pairs("authorization", "bearer abc"), want: "abc"},
		{name: "no metadata", md: nil, wantMsg: `no "authorization" metadata`},
		{name: "basic auth", md: metadata.Pairs("authorization", "Basic Zm9vOmJhcg=="), wantMsg: `does not start with "Bearer "`},
		{name: "empty token", md: metadata.Pairs("authorization", "Bearer   "), wantMsg: "empty bearer token"},
		{name: "two tokens", md: metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b"), wantMsg: "send exactly one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tc.md)
			}
			got, err := bearerToken(ctx)
			if tc.wantMsg == "" {
				if err != nil || got != tc.want {
					t.Fatalf("bearerToken = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("bearerToken error = %v; want ErrUnauthenticated containing %q", err, tc.wantMsg)
			}
		})
	}
}
