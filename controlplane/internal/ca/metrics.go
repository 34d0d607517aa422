package ca

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricCSRTotal counts CreateCertificate calls by result (documented in
// controlplane/README.md).
const MetricCSRTotal = "ambit_ca_csr_total"

// Values of the result label of MetricCSRTotal.
const (
	ResultSigned          = "signed"          // certificate issued
	ResultUnauthenticated = "unauthenticated" // no, bad or wrong-audience token
	ResultDenied          = "denied"          // node authorization refused it
	ResultInvalid         = "invalid"         // malformed CSR, wrong trust domain, bad arguments
	ResultError           = "error"           // CA not ready, TokenReview or signing failed
)

type metrics struct {
	csr *prometheus.CounterVec
}

// newMetrics builds the CA metrics and registers them on reg, if not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		csr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCSRTotal,
			Help: "Certificate signing requests handled by the CA, by result (signed, unauthenticated, denied, invalid, error).",
		}, []string{"result"}),
	}
	for _, r := range []string{ResultSigned, ResultUnauthenticated, ResultDenied, ResultInvalid, ResultError} {
		m.csr.WithLabelValues(r) // export zeros
	}
	if reg != nil {
		if err := reg.Register(m.csr); err != nil {
			return nil, fmt.Errorf("ca: registering metrics: %w", err)
		}
	}
	return m, nil
}
