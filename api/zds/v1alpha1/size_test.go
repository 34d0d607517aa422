package zdsv1alpha1_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
)

// TestLargestRequestFitsOneDatagram checks that every request, with the
// longest names Kubernetes allows, fits in MaxMessageSize and survives the
// round trip.
func TestLargestRequestFitsOneDatagram(t *testing.T) {
	const uid = "0b6c6a6e-1111-4c3a-9e0e-000000000001"
	tests := []struct {
		name string
		req  *zdsv1alpha1.WorkloadRequest
	}{
		{"add with longest names", &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Add{Add: &zdsv1alpha1.AddWorkload{
			Uid: uid,
			WorkloadInfo: &zdsv1alpha1.WorkloadInfo{
				Name:           strings.Repeat("p", 253),
				Namespace:      strings.Repeat("n", 63),
				ServiceAccount: strings.Repeat("s", 253),
			},
		}}}},
		{"keep", &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Keep{Keep: &zdsv1alpha1.KeepWorkload{Uid: uid}}}},
		{"del", &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Del{Del: &zdsv1alpha1.DelWorkload{Uid: uid}}}},
		{"snapshot sent", &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsv1alpha1.SnapshotSent{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire, err := proto.Marshal(tt.req)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if len(wire) == 0 {
				t.Fatal("request marshals to 0 bytes: an empty datagram cannot tell the payload")
			}
			if len(wire) > zdsv1alpha1.MaxMessageSize {
				t.Fatalf("request is %d bytes, more than MaxMessageSize %d", len(wire), zdsv1alpha1.MaxMessageSize)
			}
			var got zdsv1alpha1.WorkloadRequest
			if err := proto.Unmarshal(wire, &got); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !proto.Equal(tt.req, &got) {
				t.Fatalf("round trip changed the request: sent %v, got %v", tt.req, &got)
			}
		})
	}
}
