package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"ambit.dev/pkg/identity"
)

func TestRoundTrip10MiB(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, nil)

			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			data := make([]byte, 10<<20)
			rand.Read(data)
			writeErr := make(chan error, 1)
			go func() {
				for p := data; len(p) > 0; {
					n := min(len(p), 100_000) // odd size: not aligned to frames
					if _, err := c.Write(p[:n]); err != nil {
						writeErr <- err
						return
					}
					p = p[n:]
				}
				writeErr <- c.CloseWrite()
			}()
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				t.Fatalf("reading after %d bytes: %v", n, err)
			}
			if err := <-writeErr; err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("echoed %d bytes with a different sha256 (want %d bytes)", n, len(data))
			}
			if c.BytesSent() != int64(len(data)) || c.BytesReceived() != int64(len(data)) {
				t.Fatalf("BytesSent/Received = %d/%d, want %d", c.BytesSent(), c.BytesReceived(), len(data))
			}
			if got := c.RemoteAddr().String(); got != up.String() {
				t.Fatalf("RemoteAddr = %s, want the authority %s", got, up)
			}
		})
	}
}

func TestServerSeesRequest(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			got := make(chan Request, 1)
			ts := startServer(t, m, lo.ip, func(c *ServerConfig) {
				c.Authorize = func(_ context.Context, r Request) error { got <- r; return nil }
			})
			d := m.newDialer(t, nil)
			src := netip.MustParseAddrPort("10.244.1.5:43210")
			if lo.name == "IPv6" {
				src = netip.MustParseAddrPort("[fd00:10:244::5]:43210")
			}
			tg := m.target(ts, up)
			tg.Forwarded = []ForwardedElement{ForwardedFor(src, "cart.shop.svc.cluster.local")}
			tg.Baggage = Baggage{"k8s.namespace.name": "shop", "service.name": "frontend"}
			tg.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			c, err := d.Dial(context.Background(), tg)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			r := <-got
			if r.SourceID != m.clientID || r.Dst != up || r.Src != src || r.Local != ts.addr {
				t.Errorf("Request = %+v", r)
			}
			if !r.Peer.Addr().IsLoopback() || r.Peer.Port() == 0 {
				t.Errorf("Peer = %v, want the client's loopback address", r.Peer)
			}
			if len(r.Forwarded) != 1 || r.Forwarded[0].Host != "cart.shop.svc.cluster.local" {
				t.Errorf("Forwarded = %+v", r.Forwarded)
			}
			if r.Baggage["service.name"] != "frontend" || r.Baggage["k8s.namespace.name"] != "shop" {
				t.Errorf("Baggage = %v", r.Baggage)
			}
			if r.Traceparent != tg.Traceparent {
				t.Errorf("Traceparent = %q", r.Traceparent)
			}
		})
	}
}

func TestHalfClose(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name+"/client closes first", func(t *testing.T) {
			m := newMesh(t)
			// Reads to EOF, then answers: only works if CloseWrite reached it.
			up := startUpstream(t, lo.ip, func(c *net.TCPConn) {
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "read %d bytes: %s", len(b), b)
			})
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, nil)
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Liveness guard: a lost half-close fails instead of hanging.
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("x")); err == nil {
				t.Fatal("Write after CloseWrite succeeded")
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "read 5 bytes: hello" {
				t.Fatalf("ReadAll = %q, %v", b, err)
			}
		})
		t.Run(lo.name+"/upstream closes first", func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, func(c *net.TCPConn) { c.Write([]byte("bye")) })
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, nil)
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "bye" {
				t.Fatalf("ReadAll = %q, %v; want \"bye\" then EOF", b, err)
			}
			// The stream is over: writes fail once the reset arrives.
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := c.Write([]byte("late")); err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("writes keep succeeding after the upstream closed")
				}
			}
		})
	}
}

func TestStatusCodes(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			other := netip.MustParseAddrPort("10.1.2.3:80")
			if lo.name == "IPv6" {
				other = netip.MustParseAddrPort("[fd00::1:2:3]:80")
			}
			deny := errors.New("no policy allows shop/frontend")
			ts := startServer(t, m, lo.ip, func(c *ServerConfig) {
				c.Authorize = func(_ context.Context, r Request) error {
					switch r.Dst.Port() {
					case 1:
						return deny
					case 3:
						return fmt.Errorf("authorizing: %w", &StatusError{Code: 403, Reason: "forbidden here"})
					}
					return nil
				}
				c.Dial = func(ctx context.Context, r Request) (net.Conn, error) {
					if r.Dst.Port() == 2 {
						return nil, fmt.Errorf("dialing: %w", &StatusError{Code: 404, Reason: "no such service"})
					}
					return dialUpstream(ctx, r)
				}
			})
			d := m.newDialer(t, nil)
			denied := netip.AddrPortFrom(ts.addr.Addr(), 1)

			tests := []struct {
				name     string
				dst      netip.AddrPort
				wantCode int
				wantMsg  string
			}{
				{name: "denied", dst: denied, wantCode: 401, wantMsg: "denied by destination authorization policy"},
				{name: "upstream refused", dst: closedPort(t, lo.ip), wantCode: 503, wantMsg: "could not connect to the upstream"},
				{name: "authority is not this address", dst: other, wantCode: 400, wantMsg: "not the address this connection reached"},
				{name: "status chosen by Dial", dst: netip.AddrPortFrom(ts.addr.Addr(), 2), wantCode: 404, wantMsg: "no such service"},
				{name: "status chosen by Authorize", dst: netip.AddrPortFrom(ts.addr.Addr(), 3), wantCode: 403, wantMsg: "forbidden here"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					c, err := d.Dial(context.Background(), m.target(ts, tt.dst))
					if err == nil {
						c.Close()
						t.Fatal("Dial succeeded")
					}
					if !isStatus(err, tt.wantCode) || !strings.Contains(err.Error(), tt.wantMsg) {
						t.Fatalf("Dial error = %v, want status %d mentioning %q", err, tt.wantCode, tt.wantMsg)
					}
					if strings.Contains(err.Error(), deny.Error()) {
						t.Fatal("the 401 leaks the policy decision's details")
					}
				})
			}
			// The connection survives refused streams.
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if n := len(d.Conns()); n != 1 {
				t.Fatalf("%d pooled connections after refused streams, want 1", n)
			}

			// Requests our Dialer cannot produce.
			cc := rawClientConn(t, m, ts.addr)
			raw := []struct {
				name, method, authority string
				wantMsg                 string
			}{
				{name: "GET", method: "GET", authority: ts.addr.String(), wantMsg: "not CONNECT"},
				{name: "host name authority", method: "CONNECT", authority: "cart.shop:80", wantMsg: "not ip:port"},
				{name: "authority without port", method: "CONNECT", authority: ts.addr.Addr().String(), wantMsg: "not ip:port"},
			}
			for _, tt := range raw {
				t.Run(tt.name, func(t *testing.T) {
					req := &http.Request{Method: tt.method, Host: tt.authority, Header: http.Header{},
						URL: &url.URL{Scheme: "https", Host: tt.authority, Path: "/"}}
					if tt.method == "CONNECT" {
						req.URL = &url.URL{Host: tt.authority}
					}
					resp, err := cc.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 400 || !strings.Contains(string(body), tt.wantMsg) {
						t.Fatalf("got %d %q, want 400 mentioning %q", resp.StatusCode, body, tt.wantMsg)
					}
				})
			}
		})
	}
}

func TestWaypointAcceptsAnyDestination(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			var mu sync.Mutex
			var dialed []netip.AddrPort
			ts := startServer(t, m, lo.ip, func(c *ServerConfig) {
				c.Waypoint = true
				c.Dial = func(ctx context.Context, r Request) (net.Conn, error) {
					mu.Lock()
					dialed = append(dialed, r.Dst)
					mu.Unlock()
					var d net.Dialer
					return d.DialContext(ctx, "tcp", up.String()) // the "chosen backend"
				}
			})
			d := m.newDialer(t, nil)
			svc := netip.MustParseAddrPort("10.96.0.10:80")
			if lo.name == "IPv6" {
				svc = netip.MustParseAddrPort("[fd00:96::10]:80")
			}
			c, err := d.Dial(context.Background(), m.target(ts, svc))
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("ping"))
			c.CloseWrite()
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(b) != "ping" {
				t.Fatalf("echo = %q, %v", b, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(dialed) != 1 || dialed[0] != svc {
				t.Fatalf("waypoint dialed %v, want [%v]", dialed, svc)
			}
		})
	}
}

// rawClientConn is an HTTP/2 client connection with a valid client
// certificate, for sending requests the Dialer never sends.
func rawClientConn(t *testing.T, m *mesh, addr netip.AddrPort) *http2.ClientConn {
	t.Helper()
	c, err := m.cert(m.clientID)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", addr.String(), ClientTLS(c.TLS, m.ca.Roots(), m.serverID))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestGarbageDoesNotCrashServer(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, nil)
			c, err := m.cert(m.clientID)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, 4096)
			rand.Read(junk)
			// After the preface, junk's first frame header claims a length
			// (≥ 16 MiB) no server accepts: the answer is at once, not
			// after the handshake deadline.
			junk[0] = 0xff

			cases := []struct {
				name  string
				tls   bool
				bytes []byte
				// wantErr is in ServeConn's error; "" when the connection
				// is refused at the HTTP/2 level (GOAWAY), not by ServeConn.
				wantErr string
			}{
				{name: "HTTP/1.1 after TLS", tls: true, bytes: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantErr: "HTTP/2 connection preface"},
				{name: "random bytes after TLS", tls: true, bytes: junk, wantErr: "HTTP/2 connection preface"},
				{name: "preface then random frames", tls: true, bytes: append([]byte(http2.ClientPreface), junk...)},
				{name: "random bytes without TLS", bytes: junk, wantErr: "TLS handshake"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var conn net.Conn
					if tc.tls {
						conn, err = tls.Dial("tcp", ts.addr.String(), ClientTLS(c.TLS, m.ca.Roots(), m.serverID))
					} else {
						conn, err = net.Dial("tcp", ts.addr.String())
					}
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					conn.Write(tc.bytes)
					// The server hangs up; reading drains any GOAWAY or alert.
					if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
						t.Logf("read after garbage: %v", err)
					}
					if tc.wantErr != "" {
						if err := ts.nextErr(t); !strings.Contains(err.Error(), tc.wantErr) {
							t.Fatalf("ServeConn error = %v, want one about the %s", err, tc.wantErr)
						}
					}
				})
			}
			// Still serving.
			d := m.newDialer(t, nil)
			s, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatalf("server no longer serves after garbage: %v", err)
			}
			s.Close()
		})
	}
}

func TestTLSVerification(t *testing.T) {
	m := newMesh(t)
	now := time.Now()
	otherTD, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: "other.td"})
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := identity.NewLocalCA(identity.LocalCAConfig{}) // same trust domain, other root
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *identity.LocalCA, id identity.ID, nb, na time.Time) *tls.Certificate {
		c, err := ca.IssueWithValidity(id, nb, na)
		if err != nil {
			t.Fatal(err)
		}
		return c.TLS
	}
	foreignID := mustID(t, "spiffe://other.td/ns/shop/sa/frontend")
	valid := func(ca *identity.LocalCA, id identity.ID) *tls.Certificate {
		return issue(ca, id, now.Add(-time.Minute), now.Add(time.Hour))
	}
	expired := func(ca *identity.LocalCA, id identity.ID) *tls.Certificate {
		return issue(ca, id, now.Add(-2*time.Hour), now.Add(-time.Hour))
	}

	tests := []struct {
		name       string
		clientID   identity.ID
		clientCert *tls.Certificate
		serverCert *tls.Certificate
		wantServer identity.ID
		serverErr  error // wanted ServeConn error, nil if the client refuses first
		clientErr  error // wanted in the Dial error chain, nil if only the server knows why
		wantText   string
	}{
		{name: "client from another trust domain", clientID: foreignID, clientCert: valid(otherTD, foreignID),
			serverErr: ErrWrongTrustDomain, wantText: `trust domain "other.td", want "cluster.local"`},
		{name: "client signed by an unknown root", clientCert: valid(otherCA, m.clientID),
			serverErr: ErrUnknownAuthority, wantText: "not signed by the mesh roots"},
		{name: "expired client certificate", clientCert: expired(m.ca, m.clientID),
			serverErr: ErrExpired, wantText: "check clocks and certificate rotation"},
		{name: "server has another identity", wantServer: mustID(t, "spiffe://cluster.local/ns/shop/sa/payments"),
			clientErr: ErrWrongIdentity, wantText: "peer presented spiffe://cluster.local/ns/shop/sa/cart, want spiffe://cluster.local/ns/shop/sa/payments"},
		{name: "server signed by an unknown root", serverCert: valid(otherCA, m.serverID),
			clientErr: ErrUnknownAuthority, wantText: "not signed by the mesh roots"},
		{name: "expired server certificate", serverCert: expired(m.ca, m.serverID),
			clientErr: ErrExpired, wantText: "is valid"},
	}
	for _, lo := range loopbacks {
		for _, tt := range tests {
			t.Run(lo.name+"/"+tt.name, func(t *testing.T) {
				up := startUpstream(t, lo.ip, echo)
				ts := startServer(t, m, lo.ip, func(c *ServerConfig) {
					if tt.serverCert != nil {
						cfg, err := ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return tt.serverCert, nil }, m.ca.Roots, "cluster.local")
						if err != nil {
							t.Fatal(err)
						}
						c.TLS = cfg
					}
				})
				d := m.newDialer(t, func(c *DialerConfig) {
					if tt.clientCert != nil {
						c.Certificate = func(context.Context, identity.ID) (*tls.Certificate, error) { return tt.clientCert, nil }
					}
				})
				tg := m.target(ts, up)
				if !tt.clientID.IsZero() {
					tg.SourceID = tt.clientID
				}
				if !tt.wantServer.IsZero() {
					tg.DestID = tt.wantServer
				}
				c, err := d.Dial(context.Background(), tg)
				if err == nil {
					c.Close()
					t.Fatal("Dial succeeded")
				}
				if tt.clientErr != nil {
					if !errors.Is(err, tt.clientErr) || !strings.Contains(err.Error(), tt.wantText) {
						t.Fatalf("Dial error = %v, want %v mentioning %q", err, tt.clientErr, tt.wantText)
					}
				}
				if tt.serverErr != nil {
					serr := ts.nextErr(t)
					if !errors.Is(serr, tt.serverErr) || !strings.Contains(serr.Error(), tt.wantText) {
						t.Fatalf("server error = %v, want %v mentioning %q", serr, tt.serverErr, tt.wantText)
					}
				}
				if len(d.Conns()) != 0 {
					t.Fatalf("a refused connection stayed in the pool: %+v", d.Conns())
				}
			})
		}
	}
}

func TestTLSConfigs(t *testing.T) {
	m := newMesh(t)
	c, err := m.cert(m.clientID)
	if err != nil {
		t.Fatal(err)
	}
	cl := ClientTLS(c.TLS, m.ca.Roots(), m.serverID)
	sv := m.serverTLS(t)
	for name, cfg := range map[string]*tls.Config{"client": cl, "server": sv} {
		if cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != tls.VersionTLS13 {
			t.Errorf("%s: TLS versions %x..%x, want 1.3 only", name, cfg.MinVersion, cfg.MaxVersion)
		}
		if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "h2" {
			t.Errorf("%s: ALPN %v, want [h2]", name, cfg.NextProtos)
		}
		if cfg.ServerName != "" {
			t.Errorf("%s: ServerName %q, want none (no SNI)", name, cfg.ServerName)
		}
	}
	if sv.ClientAuth != tls.RequireAnyClientCert {
		t.Errorf("server ClientAuth = %v, want a required client certificate", sv.ClientAuth)
	}
	if _, err := ServerTLS(sv.GetCertificate, m.ca.Roots, "Not A Domain"); err == nil {
		t.Error("ServerTLS accepted a bad trust domain")
	}
}

func TestDialTimeoutNamesNetworkPolicy(t *testing.T) {
	m := newMesh(t)
	// A listener that accepts and never speaks TLS.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	tests := []struct {
		name     string
		dialTCP  func(ctx context.Context, t Target) (net.Conn, error)
		wantText string
	}{
		{name: "TCP connect hangs", wantText: "timed out connecting to 127.0.0.1:15008 (is a NetworkPolicy blocking HBONE port 15008?)",
			dialTCP: func(ctx context.Context, _ Target) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }},
		{name: "TLS handshake hangs", wantText: "timed out in the TLS handshake to 127.0.0.1:15008 (is a NetworkPolicy blocking HBONE port 15008?)",
			dialTCP: func(ctx context.Context, _ Target) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", ln.Addr().String())
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.newDialer(t, func(c *DialerConfig) {
				c.ConnectTimeout = 100 * time.Millisecond
				c.DialTCP = tt.dialTCP
			})
			_, err := d.Dial(context.Background(), Target{SourceID: m.clientID, DestID: m.serverID,
				HBONEAddr: netip.MustParseAddrPort("127.0.0.1:15008"), Authority: netip.MustParseAddrPort("127.0.0.1:8080")})
			if err == nil || !strings.Contains(err.Error(), tt.wantText) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Dial error = %v, want %q", err, tt.wantText)
			}
		})
	}
}

func TestServeAndShutdown(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			srv, err := NewServer(ServerConfig{TLS: m.serverTLS(t), Dial: dialUpstream, Logger: quietLogger(),
				Authorize: func(context.Context, Request) error { return nil }})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(lo.ip, "0"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx, ln) }()
			d := m.newDialer(t, nil)
			tg := Target{SourceID: m.clientID, DestID: m.serverID, HBONEAddr: addrPortOf(ln.Addr()), Authority: up}

			// A stream open across Shutdown keeps working until it ends.
			c, err := d.Dial(context.Background(), tg)
			if err != nil {
				t.Fatal(err)
			}
			shut := make(chan error, 1)
			go func() { shut <- srv.Shutdown(context.Background()) }()
			// New connections are refused once Shutdown started; wait for
			// that to be visible through a fresh dialer.
			d2 := m.newDialer(t, nil)
			for deadline := time.Now().Add(20 * time.Second); ; {
				s, err := d2.Dial(context.Background(), tg)
				if err != nil {
					break
				}
				s.Close()
				if time.Now().After(deadline) {
					t.Fatal("server keeps accepting streams on new connections after Shutdown")
				}
			}
			if _, err := c.Write([]byte("still here")); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "still here" {
				t.Fatalf("stream across Shutdown: %q, %v", b, err)
			}
			c.Close()
			if err := <-shut; err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
			cancel()
			if err := <-served; err != nil {
				t.Fatalf("Serve = %v", err)
			}
		})
	}
}

func TestConnDeadlines(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, nil)
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Nothing to read: an expired read deadline fails the read...
			c.SetReadDeadline(time.Now().Add(-time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read past the deadline = %v, want os.ErrDeadlineExceeded", err)
			}
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Write past the deadline = %v, want os.ErrDeadlineExceeded", err)
			}
			// ...without breaking the stream.
			c.SetDeadline(time.Time{})
			if _, err := c.Write([]byte("after")); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "after" {
				t.Fatalf("ReadAll after clearing deadlines = %q, %v", b, err)
			}
		})
	}
}

// TestUpstreamResetSurfacesAsError checks that an upstream that breaks
// (RST) is not reported to the client as a clean end of stream.
func TestUpstreamResetSurfacesAsError(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, func(c *net.TCPConn) {
				// Wait for the client so the RST cannot race the connect.
				c.Read(make([]byte, 1))
				c.Write([]byte("partial"))
				c.SetLinger(0) // Close sends RST
			})
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, nil)
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write([]byte("g")); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(c)
			if err == nil {
				t.Fatalf("ReadAll = %q with a clean EOF, want an error after the upstream reset", b)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("no error and no EOF before the guard deadline")
			}
		})
	}
}

// TestWithCertificateManager wires both sides to identity.Manager the way
// ztunnel does: certificates fetched on first use, roots from the Manager.
func TestWithCertificateManager(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			mgr, err := identity.NewManager(identity.ManagerConfig{Signer: m.ca, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, func(c *ServerConfig) {
				cfg, err := ServerTLS(mgr.GetCertificateFunc(m.serverID), mgr.Roots, "cluster.local")
				if err != nil {
					t.Fatal(err)
				}
				c.TLS = cfg
			})
			d := m.newDialer(t, func(c *DialerConfig) {
				c.Certificate = mgr.TLSCertificate
				c.Roots = mgr.Roots
			})
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("via manager"))
			c.CloseWrite()
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(b) != "via manager" {
				t.Fatalf("echo = %q, %v", b, err)
			}
			if snap := mgr.Snapshot(); len(snap) != 2 {
				t.Fatalf("manager holds %d identities, want client and server", len(snap))
			}
		})
	}
}

// TestConnReadDeadlineThenData checks that a Read that timed out while
// waiting leaves the stream intact: the data that arrives afterwards is
// read, in order, by the next Reads (with and without a deadline), and
// WaitRead reports it without consuming it.
func TestConnReadDeadlineThenData(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, nil)
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read with nothing to read = %v, want os.ErrDeadlineExceeded", err)
			}
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if err := c.WaitRead(); err != nil {
				t.Fatalf("WaitRead = %v", err)
			}
			first := make([]byte, 2)
			if _, err := io.ReadFull(c, first); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Time{})
			c.CloseWrite()
			rest, err := io.ReadAll(c)
			if got := string(first) + string(rest); err != nil || got != "hello" {
				t.Fatalf("read %q, %v; want %q", got, err, "hello")
			}
			c.Close()
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("Read after Close = %v, want io.ErrClosedPipe", err)
			}
			if err := c.WaitRead(); !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("WaitRead after Close = %v, want io.ErrClosedPipe", err)
			}
		})
	}
}
