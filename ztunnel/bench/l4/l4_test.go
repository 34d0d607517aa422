package main

import (
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHAProxyConfig(t *testing.T) {
	var b strings.Builder
	err := haproxyConfig.Execute(&b, haproxyData{Client: true, Threads: 2, MaxConn: 9850, Ports: []int{5001, 5002},
		ServerIP: netip.MustParseAddr("10.10.2.2"), Dir: "/tmp/d"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"bind 127.0.0.1:6002",
		"server s 10.10.2.2:7002 ssl crt /tmp/d/client.pem ca-file /tmp/d/ca.pem verify required",
		"ssl-min-ver TLSv1.3",
		"maxconn 9850",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("client config lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	err = haproxyConfig.Execute(&b, haproxyData{Client: false, Threads: 2, MaxConn: 10, Ports: []int{5002},
		ServerIP: netip.MustParseAddr("10.10.2.2"), Dir: "/tmp/d"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"bind 10.10.2.2:7002 ssl crt /tmp/d/server.pem ca-file /tmp/d/ca.pem verify required",
		"server s 127.0.0.1:5002",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("server config lacks %q:\n%s", want, b.String())
		}
	}
}

// latency sends exactly rate×d requests over the given connections and
// records one sample per answered request.
func TestLatencyCountsEveryRequest(t *testing.T) {
	tests := []struct {
		name        string
		conns       int
		rate        int
		d           time.Duration
		wantSamples int
	}{
		{"one connection", 1, 1000, 50 * time.Millisecond, 50},
		{"requests spread over 4 connections", 4, 2000, 30 * time.Millisecond, 60},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cs []net.Conn
			for range tc.conns {
				client, server := net.Pipe()
				t.Cleanup(func() { client.Close(); server.Close() })
				go func() { _, _ = io.Copy(server, server) }()
				cs = append(cs, client)
			}
			res := latency(t.Context(), cs, tc.rate, 64, tc.d)
			if res.err != nil || res.errs != 0 {
				t.Fatalf("latency over pipes: %d errors, first %v", res.errs, res.err)
			}
			if res.sent != tc.wantSamples || len(res.samples) != tc.wantSamples {
				t.Errorf("sent %d, samples %d; want %d each", res.sent, len(res.samples), tc.wantSamples)
			}
			if !slices.IsSorted(res.samples) {
				t.Error("samples are not sorted")
			}
		})
	}
}
