package admin

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// CertDumps converts the identity Manager's Snapshot into admin output,
// judging validity at now. A certificate that cannot be parsed still gets
// an entry, with the parse error in LastError.
func CertDumps(infos []identity.CertInfo, now time.Time) []adminapi.CertDump {
	out := make([]adminapi.CertDump, 0, len(infos))
	for _, ci := range infos {
		d, err := CertDumpFromInfo(ci, now)
		if err != nil {
			d = adminapi.CertDump{Identity: ci.Identity, State: adminapi.CertPending, LastError: err.Error()}
		}
		out = append(out, d)
	}
	return out
}

// CertDumpFromInfo converts one identity.CertInfo: the chain PEM becomes a
// Leaf entry followed by Intermediate entries, the roots PEM Root entries.
// State is the leaf's state at now, or CertPending when no certificate has
// been issued yet.
func CertDumpFromInfo(ci identity.CertInfo, now time.Time) (adminapi.CertDump, error) {
	d := adminapi.CertDump{Identity: ci.Identity, LastError: ci.LastError}
	if len(ci.ChainPEM) == 0 {
		d.State = adminapi.CertPending
		return d, nil
	}
	chain, err := identity.ParseCertsPEM(ci.ChainPEM)
	if err != nil {
		return adminapi.CertDump{}, fmt.Errorf("admin: certificate chain of %s: %w", ci.Identity, err)
	}
	for i, c := range chain {
		typ := adminapi.CertIntermediate
		if i == 0 {
			typ = adminapi.CertLeaf
		}
		d.Chain = append(d.Chain, certInfo(typ, c))
	}
	if len(ci.RootsPEM) > 0 {
		roots, err := identity.ParseCertsPEM(ci.RootsPEM)
		if err != nil {
			return adminapi.CertDump{}, fmt.Errorf("admin: trust roots of %s: %w", ci.Identity, err)
		}
		for _, c := range roots {
			d.Chain = append(d.Chain, certInfo(adminapi.CertRoot, c))
		}
	}
	d.State = adminapi.CertState(chain[0].NotBefore, chain[0].NotAfter, now)
	return d, nil
}

func certInfo(typ string, c *x509.Certificate) adminapi.CertInfo {
	subject := c.Subject.String()
	if typ == adminapi.CertLeaf && len(c.URIs) > 0 {
		subject = c.URIs[0].String()
	}
	return adminapi.CertInfo{
		Type:      typ,
		Serial:    c.SerialNumber.Text(16),
		Subject:   subject,
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		PEM:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})),
	}
}

// ConnDumps converts the live connections of metrics.Metrics.Live.
func ConnDumps(live []metrics.LiveConn) []adminapi.ConnDump {
	out := make([]adminapi.ConnDump, 0, len(live))
	for _, l := range live {
		out = append(out, ConnDumpFrom(l))
	}
	return out
}

// ConnDumpFrom converts one live connection. Workloads are shown as
// namespace/name.
func ConnDumpFrom(l metrics.LiveConn) adminapi.ConnDump {
	return adminapi.ConnDump{
		ID:            l.ID,
		Direction:     l.Direction,
		Protocol:      l.Protocol,
		Src:           addrString(l.Src.String(), l.Src.IsValid()),
		Dst:           addrString(l.Dst.String(), l.Dst.IsValid()),
		SrcWorkload:   workloadName(l.Labels.SourceNamespace, l.Labels.SourceWorkload),
		DstWorkload:   workloadName(l.Labels.DestinationNamespace, l.Labels.DestinationWorkload),
		SrcPrincipal:  l.Labels.SourcePrincipal,
		DstPrincipal:  l.Labels.DestinationPrincipal,
		Opened:        l.Opened,
		BytesSent:     l.BytesSent,
		BytesReceived: l.BytesReceived,
	}
}

func addrString(s string, valid bool) string {
	if !valid {
		return ""
	}
	return s
}

func workloadName(ns, name string) string {
	switch {
	case name == "":
		return ""
	case ns == "":
		return name
	default:
		return ns + "/" + name
	}
}
