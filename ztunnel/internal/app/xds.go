package app

import (
	"context"
	"sync"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/state"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// localIdentities returns the identities of the mesh (HBONE) workloads that
// run on node: the certificates this ztunnel needs. (Not LocalWorkloads:
// in xDS mode no workload has a netns path yet.)
func localIdentities(snap *state.Snapshot, node string) map[identity.ID]bool {
	out := map[identity.ID]bool{}
	for _, w := range snap.Workloads() {
		if w.Node == node && w.InMesh() {
			out[w.Identity()] = true
		}
	}
	return out
}

// prefetchLocal keeps the certificate manager holding exactly the
// identities of the node's mesh workloads (xDS mode): a new identity is
// fetched at once (a failed fetch is retried by the manager), an identity
// no local workload has any more is forgotten. It returns when ctx is done
// and its fetches have ended.
func (a *App) prefetchLocal(ctx context.Context) {
	updates, unsubscribe := a.store.Subscribe()
	defer unsubscribe()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		want = map[identity.ID]bool{}
	)
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-updates:
		}
		next := localIdentities(a.store.Current(), a.cfg.NodeName)
		mu.Lock()
		for id := range want {
			if !next[id] {
				a.log.Info("forgetting the certificate of an identity no local pod has", "identity", id.String())
				a.certs.Forget(id)
			}
		}
		var added []identity.ID
		for id := range next {
			if !want[id] {
				added = append(added, id)
			}
		}
		want = next
		mu.Unlock()
		for _, id := range added {
			wg.Go(func() {
				if _, err := a.certs.Get(ctx, id); err != nil && ctx.Err() == nil {
					a.log.Warn("certificate prefetch failed; the manager retries", "identity", id.String(), "error", err)
				}
				// The pod may have left while the fetch ran.
				mu.Lock()
				gone := !want[id]
				mu.Unlock()
				if gone {
					a.certs.Forget(id)
				}
			})
		}
	}
}

// policyDumps lists the Authorization policies of the current state (from
// the control plane, or from the workloads file), sorted by key.
func (a *App) policyDumps() []adminapi.PolicyDump {
	policies := a.store.Current().Policies()
	out := make([]adminapi.PolicyDump, 0, len(policies))
	for _, p := range policies {
		d := adminapi.PolicyDump{Name: p.Name, Namespace: p.Namespace, Scope: string(p.Scope), Action: string(p.Action), Rules: len(p.Rules)}
		if p.PeerAuth != nil {
			mode := string(p.PeerAuth.Mode)
			if mode == "" {
				mode = "UNSET"
			}
			d.Action = "PEER_AUTHENTICATION " + mode
		}
		out = append(out, d)
	}
	return out
}
