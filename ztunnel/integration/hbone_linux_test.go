package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/testtopo"
)

// directDialer returns an HBONE dialer presenting cert whose TCP
// connections leave from inside pod (a pod without redirection rules, so
// the test drives the destination's port 15008 itself).
func (m *mesh) directDialer(t *testing.T, pod *testtopo.Pod, cert *identity.Certificate) *hbone.Dialer {
	t.Helper()
	ns, err := m.topo.Netns(pod.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := hbone.NewDialer(hbone.DialerConfig{
		Certificate: func(context.Context, identity.ID) (*tls.Certificate, error) { return cert.TLS, nil },
		Roots:       m.ca.Roots,
		DialTCP: func(ctx context.Context, tg hbone.Target) (net.Conn, error) {
			return socket.DialInNetns(ctx, ns, "tcp", tg.HBONEAddr.String(), socket.DialOptions{})
		},
		ConnectTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// hboneSHA opens a stream and runs the shaApp exchange with a small payload.
func hboneSHA(ctx context.Context, d *hbone.Dialer, tg hbone.Target) (string, error) {
	c, err := d.Dial(ctx, tg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("direct hbone")); err != nil {
		return "", err
	}
	c.CloseWrite()
	return bufio.NewReader(c).ReadString('\n')
}

func TestPrivilegedHBONEPeerVerification(t *testing.T) {
	m, r := standardMesh(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	web := m.startApp(r.web, 8080, shaApp)
	z2 := m.zt[r.web.Node]
	plainID := identity.ID{TrustDomain: trustDomain, Namespace: "ns1", ServiceAccount: "plain"}
	target := func(src identity.ID) hbone.Target {
		return hbone.Target{SourceID: src, DestID: m.identity(r.web),
			HBONEAddr: netip.AddrPortFrom(r.web.IP, hbone.Port), Authority: netip.AddrPortFrom(r.web.IP, 8080)}
	}

	good, err := m.ca.Issue(plainID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := readFile(t, m.caCert), readFile(t, m.caKey)
	evilCA, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: "evil.local", SigningCertPEM: certPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	evilID := identity.ID{TrustDomain: "evil.local", Namespace: "ns1", ServiceAccount: "plain"}
	wrongTD, err := evilCA.Issue(evilID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := m.ca.IssueWithValidity(plainID, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("control: a valid mesh certificate is accepted", func(t *testing.T) {
		line, err := hboneSHA(ctx, m.directDialer(t, r.plain, good), target(plainID))
		if err != nil || !strings.HasPrefix(line, r.plain.IP.String()+" ") {
			t.Fatalf("direct HBONE with a valid certificate = %q, %v; want an answer seeing %s", line, err, r.plain.IP)
		}
	})
	for _, tc := range []struct {
		name    string
		cert    *identity.Certificate
		src     identity.ID
		wantLog string
	}{
		{"wrong trust domain", wrongTD, evilID, "wrong trust domain"},
		{"expired certificate", expired, plainID, "expired"},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			before := web.acceptedCount()
			line, err := hboneSHA(ctx, m.directDialer(t, r.plain, tc.cert), target(tc.src))
			if err == nil {
				t.Fatalf("HBONE with %s succeeded: %q", tc.name, line)
			}
			if web.acceptedCount() != before {
				t.Fatal("the app received a connection")
			}
			// The refusal is ztunnel's, for the right reason.
			waitFor(t, 5*time.Second, func() bool { return strings.Contains(z2.proc.Output(), tc.wantLog) },
				"node2 ztunnel logged no %q rejection:\n%s", tc.wantLog, tail(z2.proc.Output(), 3000))
		})
	}
}

func TestPrivilegedMalformedCONNECT(t *testing.T) {
	m, r := standardMesh(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m.startApp(r.web, 8080, shaApp)
	ns, err := m.topo.Netns(r.plain.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	plainID := identity.ID{TrustDomain: trustDomain, Namespace: "ns1", ServiceAccount: "plain"}
	cert, err := m.ca.Issue(plainID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hboneAddr := netip.AddrPortFrom(r.web.IP, hbone.Port)
	rawDial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := socket.DialInNetns(ctx, ns, "tcp", hboneAddr.String(), socket.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	tlsDial := func(t *testing.T) *tls.Conn {
		t.Helper()
		tc := tls.Client(rawDial(t), hbone.ClientTLS(cert.TLS, m.ca.Roots(), m.identity(r.web)))
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		return tc
	}
	// roundTrip sends one request on a fresh HTTP/2 connection.
	roundTrip := func(t *testing.T, method, authority string) int {
		t.Helper()
		cc, err := (&http2.Transport{}).NewClientConn(tlsDial(t))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		pr, pw := io.Pipe()
		defer pw.Close()
		req := &http.Request{Method: method, URL: &url.URL{Scheme: "https", Host: authority, Path: "/"}, Host: authority,
			Header: http.Header{}, Body: pr, ContentLength: -1, Proto: "HTTP/2.0", ProtoMajor: 2}
		if method == http.MethodConnect {
			req.URL = &url.URL{Host: authority}
		}
		resp, err := cc.RoundTrip(req.WithContext(ctx))
		if err != nil {
			t.Fatalf("%s %s: %v", method, authority, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	for _, tc := range []struct{ name, method, authority string }{
		{"non-CONNECT method", http.MethodGet, netip.AddrPortFrom(r.web.IP, 8080).String()},
		{"authority not ip:port", http.MethodConnect, "web.ns2.svc:8080"},
		{"authority with port 0", http.MethodConnect, r.web.IP.String() + ":0"},
		{"authority of another pod", http.MethodConnect, netip.AddrPortFrom(r.strict.IP, 8080).String()},
	} {
		t.Run(tc.name+" gets 400", func(t *testing.T) {
			if code := roundTrip(t, tc.method, tc.authority); code != http.StatusBadRequest {
				t.Fatalf("%s %s answered %d, want 400", tc.method, tc.authority, code)
			}
		})
	}
	t.Run("plain text instead of TLS is closed", func(t *testing.T) {
		c := rawDial(t)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		expectClosed(t, c)
	})
	t.Run("garbage instead of the HTTP/2 preface is closed", func(t *testing.T) {
		c := tlsDial(t)
		c.Write([]byte("this is not an HTTP/2 connection preface\r\n\r\n"))
		expectClosed(t, c)
	})
	t.Run("ztunnel keeps serving", func(t *testing.T) {
		d := m.directDialer(t, r.plain, cert)
		tg := hbone.Target{SourceID: plainID, DestID: m.identity(r.web), HBONEAddr: hboneAddr, Authority: netip.AddrPortFrom(r.web.IP, 8080)}
		if line, err := hboneSHA(ctx, d, tg); err != nil || !strings.HasPrefix(line, r.plain.IP.String()+" ") {
			t.Fatalf("HBONE after the malformed requests = %q, %v", line, err)
		}
		got, sent, err := m.sendSHA(ctx, r.client, netip.AddrPortFrom(r.web.IP, 8080), 64<<10)
		if err != nil || got.Sum != sent {
			t.Fatalf("mesh client after the malformed requests: %+v, %v", got, err)
		}
	})
}

// expectClosed reads until the server closes c (EOF or reset); a timeout
// fails.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection within 10s")
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
