package cav1alpha1_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
)

// fakeCA is a hand-written CertificateService that checks the bearer token
// the way ca.proto describes and echoes fixed PEM strings.
type fakeCA struct {
	cav1alpha1.UnimplementedCertificateServiceServer
	token string
}

func (f *fakeCA) authenticate(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(cav1alpha1.AuthorizationMetadataKey)
	if len(vals) != 1 || !strings.HasPrefix(vals[0], cav1alpha1.BearerPrefix) ||
		strings.TrimPrefix(vals[0], cav1alpha1.BearerPrefix) != f.token {
		return status.Error(codes.Unauthenticated, "missing or wrong bearer token")
	}
	return nil
}

func (f *fakeCA) CreateCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, error) {
	if err := f.authenticate(ctx); err != nil {
		return nil, err
	}
	if req.GetCsr() == "" {
		return nil, status.Error(codes.InvalidArgument, "empty csr")
	}
	return &cav1alpha1.CreateCertificateResponse{CertChain: []string{"LEAF", "ROOT"}}, nil
}

func (f *fakeCA) GetTrustBundle(ctx context.Context, _ *cav1alpha1.GetTrustBundleRequest) (*cav1alpha1.GetTrustBundleResponse, error) {
	if err := f.authenticate(ctx); err != nil {
		return nil, err
	}
	return &cav1alpha1.GetTrustBundleResponse{TrustDomain: "cluster.local", Roots: []string{"ROOT"}}, nil
}

func dialFake(t *testing.T) cav1alpha1.CertificateServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	cav1alpha1.RegisterCertificateServiceServer(srv, &fakeCA{token: "good-token"})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial bufconn: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cav1alpha1.NewCertificateServiceClient(conn)
}

func TestCertificateServiceOverGRPC(t *testing.T) {
	client := dialFake(t)
	tests := []struct {
		name     string
		token    string
		wantCode codes.Code
	}{
		{name: "valid token", token: "good-token", wantCode: codes.OK},
		{name: "wrong token", token: "stolen-token", wantCode: codes.Unauthenticated},
		{name: "no token", wantCode: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, cav1alpha1.AuthorizationMetadataKey, cav1alpha1.BearerPrefix+tt.token)
			}
			resp, err := client.CreateCertificate(ctx, &cav1alpha1.CreateCertificateRequest{Csr: "CSR", ValidityDurationSeconds: 3600})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("CreateCertificate code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if tt.wantCode == codes.OK {
				if chain := resp.GetCertChain(); len(chain) != 2 || chain[0] != "LEAF" || chain[1] != "ROOT" {
					t.Errorf("cert_chain = %q, want [LEAF ROOT]", chain)
				}
			}
			bundle, err := client.GetTrustBundle(ctx, &cav1alpha1.GetTrustBundleRequest{})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("GetTrustBundle code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if tt.wantCode == codes.OK && (bundle.GetTrustDomain() != "cluster.local" || len(bundle.GetRoots()) != 1) {
				t.Errorf("trust bundle = %v, want cluster.local with one root", bundle)
			}
		})
	}
	t.Run("method paths", func(t *testing.T) {
		// Non-Go clients (and grpcurl) address the RPCs by these paths.
		if got, want := cav1alpha1.CertificateService_CreateCertificate_FullMethodName, "/ambit.ca.v1alpha1.CertificateService/CreateCertificate"; got != want {
			t.Errorf("CreateCertificate path = %q, want %q", got, want)
		}
		if got, want := cav1alpha1.CertificateService_GetTrustBundle_FullMethodName, "/ambit.ca.v1alpha1.CertificateService/GetTrustBundle"; got != want {
			t.Errorf("GetTrustBundle path = %q, want %q", got, want)
		}
	})
}
