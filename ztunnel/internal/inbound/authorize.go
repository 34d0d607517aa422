package inbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/authz"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

// ErrDenied is wrapped by the errors PolicyAuthorizer returns for a denied
// connection.
var ErrDenied = errors.New("denied by authorization policy")

// PolicyAuthorizer is the Authorizer that enforces the Authorization
// policies of the current state: authz.Evaluate over the policies that apply
// to the destination workload. Every decision is counted
// (MetricAuthzDecisions) and logged: allows at Debug, denies at Info, AUDIT
// matches at Info.
type PolicyAuthorizer struct {
	// Store is required.
	Store *state.Store
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Authorize decides r against the current snapshot's policies.
func (a *PolicyAuthorizer) Authorize(ctx context.Context, r Request) error {
	conn := authz.Conn{SourceIP: r.SourceAddr.Addr().Unmap(), DestinationPort: r.Dst.Port()}
	if !r.Plaintext && r.Source != (identity.ID{}) {
		conn.Principal = Principal(r.Source)
	}
	d := authz.Evaluate(a.Store.Current().PoliciesFor(r.Workload), conn)
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	attrs := []any{
		"policy", orNone(d.Policy), "action", orNone(string(d.Action)),
		"sourcePrincipal", orNone(conn.Principal), "sourceAddr", r.SourceAddr.String(),
		"workload", r.Workload.Namespace + "/" + r.Workload.Name, "port", r.Dst.Port(), "plaintext", r.Plaintext,
	}
	for _, p := range d.Audits {
		log.InfoContext(ctx, "authorization audit: policy matched", append([]any{"auditPolicy", p}, attrs...)...)
	}
	if d.Allow {
		a.Metrics.AuthzDecision(metrics.DecisionAllow, d.Policy, string(d.Action))
		log.DebugContext(ctx, "authorization: allowed", attrs...)
		return nil
	}
	a.Metrics.AuthzDecision(metrics.DecisionDeny, d.Policy, string(d.Action))
	log.InfoContext(ctx, "authorization: denied", attrs...)
	if d.Policy != "" {
		return fmt.Errorf("%w: DENY policy %s matches the connection from %s to port %d", ErrDenied, d.Policy, orNone(conn.Principal), r.Dst.Port())
	}
	return fmt.Errorf("%w: no ALLOW policy of workload %s matches the connection from %s to port %d", ErrDenied, r.Workload, orNone(conn.Principal), r.Dst.Port())
}

// Principal writes id as policies see it: the SPIFFE ID without the
// scheme, "<trust-domain>/ns/<namespace>/sa/<service-account>".
func Principal(id identity.ID) string {
	return id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

func orNone(s string) string {
	if s == "" {
		return metrics.NoPolicy
	}
	return s
}

// mtlsMode is the inbound mTLS mode of workload w for destination port:
// the peer-authentication policies of the current state, falling back to
// the workload's own mode when none sets one.
func (in *Inbound) mtlsMode(w model.Workload, port uint16) model.MTLSMode {
	return authz.MTLSMode(in.cfg.Store.Current().PoliciesFor(w), port, w.MTLSMode)
}
