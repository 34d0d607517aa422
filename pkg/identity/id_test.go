package identity

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ID
		wantErr string
	}{
		{name: "default trust domain", in: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
			want: ID{"cluster.local", "default", "bookinfo-productpage"}},
		{name: "other trust domain", in: "spiffe://example.org/ns/prod/sa/api",
			want: ID{"example.org", "prod", "api"}},
		{name: "dots and underscores", in: "spiffe://td/ns/a.b/sa/c_d",
			want: ID{"td", "a.b", "c_d"}},
		{name: "empty", in: "", wantErr: "cannot be empty"},
		{name: "wrong scheme", in: "https://cluster.local/ns/a/sa/b", wantErr: "scheme is missing or invalid"},
		{name: "no trust domain", in: "spiffe:///ns/a/sa/b", wantErr: "trust domain is missing"},
		{name: "upper-case trust domain", in: "spiffe://Cluster.local/ns/a/sa/b", wantErr: "trust domain characters"},
		{name: "port in trust domain", in: "spiffe://td:8080/ns/a/sa/b", wantErr: "trust domain characters"},
		{name: "no path", in: "spiffe://cluster.local", wantErr: "/ns/<namespace>/sa/<serviceaccount>"},
		{name: "namespace only", in: "spiffe://cluster.local/ns/a", wantErr: "/ns/<namespace>/sa/<serviceaccount>"},
		{name: "extra segment", in: "spiffe://cluster.local/ns/a/sa/b/c", wantErr: "/ns/<namespace>/sa/<serviceaccount>"},
		{name: "wrong keywords", in: "spiffe://cluster.local/namespace/a/sa/b", wantErr: "/ns/<namespace>/sa/<serviceaccount>"},
		{name: "empty segment", in: "spiffe://cluster.local/ns//sa/b", wantErr: "empty segments"},
		{name: "dot segment", in: "spiffe://cluster.local/ns/../sa/b", wantErr: "dot segments"},
		{name: "trailing slash", in: "spiffe://cluster.local/ns/a/sa/b/", wantErr: "trailing slash"},
		{name: "query", in: "spiffe://cluster.local/ns/a/sa/b?x=1", wantErr: "path segment characters"},
		{name: "percent encoding", in: "spiffe://cluster.local/ns/a%20b/sa/b", wantErr: "path segment characters"},
		{name: "userinfo", in: "spiffe://u@cluster.local/ns/a/sa/b", wantErr: "trust domain characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
			if got.URL().String() != tt.in {
				t.Fatalf("URL() = %q, want %q", got.URL(), tt.in)
			}
			sid, err := got.SPIFFEID()
			if err != nil || sid.String() != tt.in {
				t.Fatalf("SPIFFEID() = %v, %v", sid, err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name, td, ns, sa string
		wantErr          string
	}{
		{name: "ok", td: "cluster.local", ns: "default", sa: "default"},
		{name: "empty trust domain", td: "", ns: "a", sa: "b", wantErr: "empty trust domain"},
		{name: "trust domain given as ID", td: "spiffe://cluster.local/x", ns: "a", sa: "b", wantErr: "bare lower-case name"},
		{name: "empty namespace", td: "td", ns: "", sa: "b", wantErr: "empty namespace"},
		{name: "empty service account", td: "td", ns: "a", sa: "", wantErr: "empty service account"},
		{name: "slash in namespace", td: "td", ns: "a/b", sa: "c", wantErr: "bad namespace"},
		{name: "dot-dot service account", td: "td", ns: "a", sa: "..", wantErr: "bad service account"},
		{name: "too long", td: "td", ns: strings.Repeat("a", 254), sa: "c", wantErr: "longer than 253"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := New(tt.td, tt.ns, tt.sa)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
				}
				if !id.IsZero() {
					t.Fatalf("New returned %+v with an error", id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(id.String())
			if err != nil || back != id {
				t.Fatalf("Parse(String()) = %+v, %v; want %+v", back, err, id)
			}
		})
	}
}
