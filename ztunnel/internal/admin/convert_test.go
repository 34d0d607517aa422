package admin

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// newIntermediateCA returns a LocalCA that signs with an intermediate under
// a fresh root, so issued chains are leaf + intermediate.
func newIntermediateCA(t *testing.T, now time.Time) *identity.LocalCA {
	t.Helper()
	rootPEM, rootKeyPEM, err := identity.GenerateRoot("cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := identity.ParseCertsPEM(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := identity.ParsePrivateKeyPEM(rootKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0xbeef),
		Subject:               pkix.Name{Organization: []string{"cluster.local"}, CommonName: "Ambit intermediate CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, roots[0], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	interPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{
		SigningCertPEM: interPEM,
		SigningKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CertChainPEM:   interPEM,
		RootCertPEM:    rootPEM,
		Clock:          func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCertDumpFromInfo(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	id, err := identity.New("cluster.local", "ns1", "sa1")
	if err != nil {
		t.Fatal(err)
	}
	ca := newIntermediateCA(t, now)
	info := func(t *testing.T, notBefore, notAfter time.Time) identity.CertInfo {
		c, err := ca.IssueWithValidity(id, notBefore, notAfter)
		if err != nil {
			t.Fatal(err)
		}
		return identity.CertInfo{
			Identity: id.String(), Serial: c.Serial(), NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter,
			ChainPEM: c.ChainPEM(), RootsPEM: c.RootsPEM(),
		}
	}
	tests := []struct {
		name      string
		info      func(t *testing.T) identity.CertInfo
		wantState string
		wantTypes []string
	}{
		{"valid", func(t *testing.T) identity.CertInfo { return info(t, now.Add(-time.Minute), now.Add(24*time.Hour)) },
			adminapi.CertValid, []string{adminapi.CertLeaf, adminapi.CertIntermediate, adminapi.CertRoot}},
		{"expired", func(t *testing.T) identity.CertInfo { return info(t, now.Add(-48*time.Hour), now.Add(-24*time.Hour)) },
			adminapi.CertExpired, []string{adminapi.CertLeaf, adminapi.CertIntermediate, adminapi.CertRoot}},
		{"not yet valid", func(t *testing.T) identity.CertInfo { return info(t, now.Add(time.Hour), now.Add(25*time.Hour)) },
			adminapi.CertNotYetValid, []string{adminapi.CertLeaf, adminapi.CertIntermediate, adminapi.CertRoot}},
		{"no roots", func(t *testing.T) identity.CertInfo {
			ci := info(t, now.Add(-time.Minute), now.Add(time.Hour))
			ci.RootsPEM = nil
			return ci
		}, adminapi.CertValid, []string{adminapi.CertLeaf, adminapi.CertIntermediate}},
		{"not issued yet", func(*testing.T) identity.CertInfo {
			return identity.CertInfo{Identity: id.String(), LastError: "CA unreachable"}
		}, adminapi.CertPending, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ci := tc.info(t)
			d, err := CertDumpFromInfo(ci, now)
			if err != nil {
				t.Fatalf("CertDumpFromInfo: %v", err)
			}
			if d.Identity != id.String() || d.State != tc.wantState || d.LastError != ci.LastError {
				t.Errorf("adminapi.CertDump = {%s %s %q}, want {%s %s %q}", d.Identity, d.State, d.LastError, id, tc.wantState, ci.LastError)
			}
			var types []string
			for _, c := range d.Chain {
				types = append(types, c.Type)
				if strings.Contains(c.PEM, "PRIVATE KEY") || !strings.HasPrefix(c.PEM, "-----BEGIN CERTIFICATE-----") {
					t.Errorf("%s PEM is not a lone public certificate:\n%s", c.Type, c.PEM)
				}
			}
			if strings.Join(types, ",") != strings.Join(tc.wantTypes, ",") {
				t.Fatalf("chain types = %v, want %v", types, tc.wantTypes)
			}
			if len(d.Chain) == 0 {
				return
			}
			leaf := d.Chain[0]
			if leaf.Serial != ci.Serial || leaf.Subject != id.String() || !leaf.NotBefore.Equal(ci.NotBefore) || !leaf.NotAfter.Equal(ci.NotAfter) {
				t.Errorf("leaf = %+v, want serial %s subject %s validity %s..%s", leaf, ci.Serial, id, ci.NotBefore, ci.NotAfter)
			}
			if got := d.Chain[1]; got.Serial != "beef" || !strings.Contains(got.Subject, "Ambit intermediate CA") {
				t.Errorf("intermediate = %+v, want serial beef and its subject DN", got)
			}
			if len(d.Chain) > 2 && !strings.Contains(d.Chain[2].Subject, "Ambit root CA") {
				t.Errorf("root subject = %q, want the root's DN", d.Chain[2].Subject)
			}
		})
	}
}

func TestCertDumpsBadPEM(t *testing.T) {
	now := time.Now()
	got := CertDumps([]identity.CertInfo{{Identity: "spiffe://cluster.local/ns/a/sa/b", ChainPEM: []byte("garbage")}}, now)
	if len(got) != 1 || got[0].State != adminapi.CertPending || !strings.Contains(got[0].LastError, "certificate chain of spiffe://cluster.local/ns/a/sa/b") {
		t.Fatalf("CertDumps(bad PEM) = %+v, want one Pending entry naming the identity", got)
	}
}

func TestConnDumpFrom(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   metrics.LiveConn
		want adminapi.ConnDump
	}{
		{
			name: "IPv4 with workloads",
			in: metrics.LiveConn{ID: 7, Direction: metrics.DirectionOutbound, Protocol: metrics.ProtocolHBONE,
				Src: netip.MustParseAddrPort("10.10.1.2:40000"), Dst: netip.MustParseAddrPort("10.10.2.3:8080"),
				Labels: metrics.ConnLabels{SourceWorkload: "client", SourceNamespace: "ns1", SourcePrincipal: "spiffe://cluster.local/ns/ns1/sa/sa1",
					DestinationWorkload: "server", DestinationNamespace: "ns2", DestinationPrincipal: "spiffe://cluster.local/ns/ns2/sa/sa2"},
				Opened: at, BytesSent: 5, BytesReceived: 6},
			want: adminapi.ConnDump{ID: 7, Direction: "outbound", Protocol: "HBONE", Src: "10.10.1.2:40000", Dst: "10.10.2.3:8080",
				SrcWorkload: "ns1/client", DstWorkload: "ns2/server", SrcPrincipal: "spiffe://cluster.local/ns/ns1/sa/sa1",
				DstPrincipal: "spiffe://cluster.local/ns/ns2/sa/sa2", Opened: at, BytesSent: 5, BytesReceived: 6},
		},
		{
			name: "IPv6 plaintext from outside the mesh",
			in: metrics.LiveConn{ID: 8, Direction: metrics.DirectionInbound, Protocol: metrics.ProtocolTCP,
				Src: netip.MustParseAddrPort("[fd00::1]:40000"), Dst: netip.MustParseAddrPort("[fd00::2]:80"),
				Labels: metrics.ConnLabels{DestinationWorkload: "server"}, Opened: at},
			want: adminapi.ConnDump{ID: 8, Direction: "inbound", Protocol: "TCP", Src: "[fd00::1]:40000", Dst: "[fd00::2]:80",
				DstWorkload: "server", Opened: at},
		},
		{
			name: "unknown addresses",
			in:   metrics.LiveConn{ID: 9, Direction: metrics.DirectionInbound, Protocol: metrics.ProtocolTCP, Opened: at},
			want: adminapi.ConnDump{ID: 9, Direction: "inbound", Protocol: "TCP", Opened: at},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ConnDumpFrom(tc.in); got != tc.want {
				t.Fatalf("ConnDumpFrom = %+v\nwant %+v", got, tc.want)
			}
			if got := ConnDumps([]metrics.LiveConn{tc.in}); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("ConnDumps = %+v", got)
			}
		})
	}
}
