package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/zdsserver"
	"ambit.dev/pkg/redirect"
)

// familiesOf returns the IP families of ips; both when ips is empty.
func familiesOf(ips []netip.Addr) []redirect.Family {
	var out []redirect.Family
	for _, ip := range ips {
		f := redirect.IPv6
		if ip.Unmap().Is4() {
			f = redirect.IPv4
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// sameIPs reports whether a and b hold the same addresses, in any order.
func sameIPs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, ip := range a {
		if !slices.Contains(b, ip) {
			return false
		}
	}
	return true
}

// newRecord builds the record of p captured in f (ownership of f passes to
// the record): the rules' families are the pod's, and kubelet probes,
// which come from the netns's default gateway on a bridge CNI, are exempt.
func (a *Agent) newRecord(p Pod, f *os.File, containerID string) (*record, error) {
	gws, err := a.netns.Gateways(f)
	if err != nil {
		return nil, fmt.Errorf("read the default gateway (kubelet probe source) in the netns of pod %s: %w", p, err)
	}
	return &record{
		pod:   p,
		netns: f,
		cfg: redirect.Config{
			Families:       familiesOf(p.IPs),
			Backend:        a.cfg.Backend,
			ProbeSourceIPs: gws,
		},
		containerID: containerID,
	}, nil
}

// captureRunning captures a running pod found by its IPs (reconcile).
func (a *Agent) captureRunning(ctx context.Context, p Pod) (Outcome, error) {
	unlock := a.locks.lock(p.UID)
	defer unlock()
	r := a.record(p.UID)
	if r != nil && len(r.pod.IPs) > 0 && !sameIPs(r.pod.IPs, p.IPs) {
		// The sandbox was replaced without a CNI DEL/ADD reaching the agent.
		a.log.Info("pod IPs changed; finding its new netns", "pod", p.String(), "old", r.pod.IPs, "new", p.IPs)
		a.forgetLocked(p.UID, "sandbox replaced")
		r = nil
	}
	if r == nil {
		f, err := a.netns.Find(p.IPs)
		if err != nil {
			out := OutcomeNetnsNotFound
			if errors.Is(err, netns.ErrAmbiguous) {
				out = OutcomeNetnsAmbiguous
			}
			a.metrics.errors.WithLabelValues(out.String()).Inc()
			return out, fmt.Errorf("find the netns of pod %s: %w", p, err)
		}
		r, err = a.newRecord(p, f, "")
		if err != nil {
			f.Close()
			a.metrics.errors.WithLabelValues(OutcomeRulesFailed.String()).Inc()
			return OutcomeRulesFailed, err
		}
		a.setRecord(r)
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ZtunnelTimeout)
	defer cancel()
	return a.complete(ctx, r, false)
}

// complete installs r's rules (once per held netns) and hands the netns to
// ztunnel. With waitForZtunnel, it waits (until ctx ends) for a ztunnel to
// connect when none is; else it fails at once. Caller holds r's lock.
func (a *Agent) complete(ctx context.Context, r *record, waitForZtunnel bool) (Outcome, error) {
	if !r.applied {
		if err := a.rules.Apply(ctx, netns.FDPath(r.netns), r.cfg); err != nil {
			a.metrics.errors.WithLabelValues(OutcomeRulesFailed.String()).Inc()
			return OutcomeRulesFailed, fmt.Errorf("install the redirection rules of pod %s: %w", r.pod, err)
		}
		r.applied = true
	}
	for {
		err := a.zt.Add(ctx, r.pod.workload(), r.netns)
		switch {
		case err == nil:
			if !r.counted {
				r.counted = true
				a.metrics.captures.Inc()
				a.log.Info("pod captured", "pod", r.pod.String(), "uid", r.pod.UID, "ips", r.pod.IPs,
					"probeSources", r.cfg.ProbeSourceIPs, "sandbox", r.containerID)
			}
			return OutcomeDone, nil
		case errors.Is(err, zdsserver.ErrNoZtunnel) && waitForZtunnel:
			if werr := a.zt.WaitLive(ctx); werr != nil {
				a.metrics.errors.WithLabelValues(OutcomeNoZtunnel.String()).Inc()
				return OutcomeNoZtunnel, err
			}
		case errors.Is(err, zdsserver.ErrNoZtunnel):
			a.metrics.errors.WithLabelValues(OutcomeNoZtunnel.String()).Inc()
			return OutcomeNoZtunnel, err
		default:
			a.metrics.errors.WithLabelValues(OutcomeNotAcked.String()).Inc()
			return OutcomeNotAcked, err
		}
	}
}

// release removes the rules of a pod that left the mesh, tells ztunnel and
// closes its netns. Rules go first, so that no connection is redirected to
// a ztunnel that already stopped listening in the pod.
func (a *Agent) release(ctx context.Context, p Pod) (Outcome, error) {
	unlock := a.locks.lock(p.UID)
	defer unlock()
	var err error
	if r := a.record(p.UID); r != nil {
		err = a.rules.Remove(ctx, netns.FDPath(r.netns), r.cfg)
	} else if len(p.IPs) > 0 {
		// Not held (e.g. the agent restarted): find the netns to clean it.
		f, ferr := a.netns.Find(p.IPs)
		switch {
		case ferr == nil:
			err = a.rules.Remove(ctx, netns.FDPath(f), redirect.Config{Families: familiesOf(p.IPs), Backend: a.cfg.Backend})
			f.Close()
		case errors.Is(ferr, netns.ErrNotFound):
			// No sandbox with its IPs: nothing left to remove.
		default:
			err = ferr
		}
	}
	if err != nil {
		a.metrics.errors.WithLabelValues(OutcomeRulesFailed.String()).Inc()
		return OutcomeRulesFailed, fmt.Errorf("remove the redirection rules of pod %s: %w", p, err)
	}
	had := a.dropRecord(p.UID)
	if a.zt.Has(p.UID) {
		a.zt.Del(p.UID)
		had = true
	}
	if had {
		a.metrics.releases.WithLabelValues("unenrolled").Inc()
	}
	a.log.Info("pod released from the mesh", "pod", p.String(), "uid", p.UID)
	return OutcomeDone, nil
}

// forget drops a pod whose sandbox is gone: DelWorkload and close its
// netns. Its rules died with the netns.
func (a *Agent) forget(uid, why string) {
	unlock := a.locks.lock(uid)
	defer unlock()
	a.forgetLocked(uid, why)
}

func (a *Agent) forgetLocked(uid, why string) bool {
	r := a.record(uid)
	had := a.dropRecord(uid)
	if a.zt.Has(uid) {
		a.zt.Del(uid)
		had = true
	}
	if had {
		a.metrics.releases.WithLabelValues("sandbox_gone").Inc()
		pod := uid
		if r != nil {
			pod = r.pod.String()
		}
		a.log.Info("pod forgotten", "pod", pod, "uid", uid, "reason", why)
	}
	return had
}
