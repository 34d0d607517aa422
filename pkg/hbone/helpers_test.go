package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ambit.dev/pkg/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loopbacks are the address families every end-to-end test runs on.
var loopbacks = []struct{ name, ip string }{{"IPv4", "127.0.0.1"}, {"IPv6", "::1"}}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// mesh is a trust domain with a LocalCA and a cache of issued certificates.
type mesh struct {
	ca       *identity.LocalCA
	clientID identity.ID
	serverID identity.ID

	mu    sync.Mutex
	certs map[identity.ID]*identity.Certificate
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{
		ca:       ca,
		clientID: mustID(t, "spiffe://cluster.local/ns/shop/sa/frontend"),
		serverID: mustID(t, "spiffe://cluster.local/ns/shop/sa/cart"),
		certs:    map[identity.ID]*identity.Certificate{},
	}
}

func mustID(t testing.TB, s string) identity.ID {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (m *mesh) cert(id identity.ID) (*identity.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.certs[id]; ok {
		return c, nil
	}
	c, err := m.ca.Issue(id, time.Hour)
	if err != nil {
		return nil, err
	}
	m.certs[id] = c
	return c, nil
}

func (m *mesh) dialerConfig() DialerConfig {
	return DialerConfig{
		Certificate: func(_ context.Context, id identity.ID) (*tls.Certificate, error) {
			c, err := m.cert(id)
			if err != nil {
				return nil, err
			}
			return c.TLS, nil
		},
		Roots:  m.ca.Roots,
		Logger: quietLogger(),
	}
}

func (m *mesh) newDialer(t testing.TB, mod func(*DialerConfig)) *Dialer {
	t.Helper()
	cfg := m.dialerConfig()
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// serverTLS is the TLS config of a server presenting m.serverID.
func (m *mesh) serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	cfg, err := ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := m.cert(m.serverID)
		if err != nil {
			return nil, err
		}
		return c.TLS, nil
	}, m.ca.Roots, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testServer is an HBONE server on a loopback listener whose ServeConn
// errors are collected.
type testServer struct {
	addr netip.AddrPort
	srv  *Server
	errs chan error
}

func dialUpstream(ctx context.Context, r Request) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", r.Dst.String())
}

func startServer(t testing.TB, m *mesh, ip string, mod func(*ServerConfig)) *testServer {
	t.Helper()
	cfg := ServerConfig{
		TLS:       m.serverTLS(t),
		Authorize: func(context.Context, Request) error { return nil },
		Dial:      dialUpstream,
		Logger:    quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: addrPortOf(ln.Addr()), srv: srv, errs: make(chan error, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				if err := srv.ServeConn(ctx, c); err != nil {
					select {
					case ts.errs <- err:
					default:
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ts
}

// nextErr returns the next ServeConn error.
func (ts *testServer) nextErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-ts.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("server reported no connection error")
		return nil
	}
}

// startUpstream runs handle for every connection accepted on a loopback
// listener and returns its address.
func startUpstream(t testing.TB, ip string, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return addrPortOf(ln.Addr())
}

// echo copies everything back and half-closes when the client does.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// closedPort returns a loopback port that nothing listens on.
func closedPort(t testing.TB, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ap := addrPortOf(ln.Addr())
	ln.Close()
	return ap
}

func (m *mesh) target(ts *testServer, dst netip.AddrPort) Target {
	return Target{SourceID: m.clientID, DestID: m.serverID, HBONEAddr: ts.addr, Authority: dst}
}

func isStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}
