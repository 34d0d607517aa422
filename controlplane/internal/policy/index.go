package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Index holds every compiled policy and answers the questions that involve
// several objects: which selector policies a pod lists, which
// PeerAuthentications win a conflict, and the resulting conditions. It is
// not safe for concurrent use (the caller holds a lock).
//
// Index keeps the Compiled values it is given, including their maps and
// Authorization pointers: the caller must not modify them after Set, and
// must not modify what Authorizations returns.
type Index struct {
	entries map[Ref]*Compiled
	// groups are the PeerAuthentications without selector, by namespace
	// and scope: each group is one conflict set, only its oldest is served.
	groups map[groupKey]map[Ref]struct{}
	// selectors are the WORKLOAD_SELECTOR policies that select pods of
	// their own namespace only, by namespace.
	selectors map[string]map[Ref]struct{}
	// allNamespaces are the WORKLOAD_SELECTOR policies of the root
	// namespace (AllNamespaces).
	allNamespaces map[Ref]struct{}
}

type groupKey struct {
	namespace string
	scope     workloadv1alpha1.Scope
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	return &Index{
		entries:       map[Ref]*Compiled{},
		groups:        map[groupKey]map[Ref]struct{}{},
		selectors:     map[string]map[Ref]struct{}{},
		allNamespaces: map[Ref]struct{}{},
	}
}

// conflictGroup returns the conflict group of c, and false when c takes
// part in none (AuthorizationPolicies and selector PeerAuthentications).
func conflictGroup(c *Compiled) (groupKey, bool) {
	if c == nil || c.Ref.Kind != KindPeerAuthentication || c.Scope == workloadv1alpha1.Scope_WORKLOAD_SELECTOR {
		return groupKey{}, false
	}
	return groupKey{namespace: c.Ref.Namespace, scope: c.Scope}, true
}

// older orders policies oldest first: by Created, then namespace, then
// name.
func older(a, b *Compiled) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Ref.Namespace, b.Ref.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(a.Ref.Name, b.Ref.Name)
}

func compareRefs(a, b Ref) int {
	if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// Set stores c, replacing any policy with the same Ref. It returns, sorted,
// the Refs whose Condition or published Authorization may have changed:
// c's own, and the PeerAuthentications whose conflict outcome (winning,
// losing, or the winner named in their message) changed. Changes to which
// workloads list which selector policies are not reported here: the caller
// recomputes ForWorkload.
func (ix *Index) Set(c Compiled) []Ref {
	stored := &c
	return ix.replace(c.Ref, stored)
}

// Delete removes the policy r. It returns, sorted, r itself (Condition then
// reports it unknown) and the PeerAuthentications whose conflict outcome
// changed, as Set does; nil when r was not stored.
func (ix *Index) Delete(r Ref) []Ref {
	if _, ok := ix.entries[r]; !ok {
		return nil
	}
	return ix.replace(r, nil)
}

// replace swaps the entry for r (nil: removes it) and reports the changed
// refs.
func (ix *Index) replace(r Ref, c *Compiled) []Ref {
	old := ix.entries[r]
	affected := map[Ref]struct{}{r: {}}
	for _, x := range []*Compiled{old, c} {
		if k, ok := conflictGroup(x); ok {
			for m := range ix.groups[k] {
				affected[m] = struct{}{}
			}
		}
	}
	before := ix.outcomes(affected)
	ix.remove(old)
	ix.add(c)
	after := ix.outcomes(affected)

	changed := []Ref{r}
	for m := range affected {
		if m != r && before[m] != after[m] {
			changed = append(changed, m)
		}
	}
	slices.SortFunc(changed, compareRefs)
	return changed
}

func (ix *Index) add(c *Compiled) {
	if c == nil {
		return
	}
	ix.entries[c.Ref] = c
	if k, ok := conflictGroup(c); ok {
		addRef(ix.groups, k, c.Ref)
	}
	switch {
	case c.Scope != workloadv1alpha1.Scope_WORKLOAD_SELECTOR:
	case c.AllNamespaces:
		ix.allNamespaces[c.Ref] = struct{}{}
	default:
		addRef(ix.selectors, c.Ref.Namespace, c.Ref)
	}
}

func (ix *Index) remove(c *Compiled) {
	if c == nil {
		return
	}
	delete(ix.entries, c.Ref)
	if k, ok := conflictGroup(c); ok {
		removeRef(ix.groups, k, c.Ref)
	}
	delete(ix.allNamespaces, c.Ref)
	removeRef(ix.selectors, c.Ref.Namespace, c.Ref)
}

func addRef[K comparable](m map[K]map[Ref]struct{}, k K, r Ref) {
	set := m[k]
	if set == nil {
		set = map[Ref]struct{}{}
		m[k] = set
	}
	set[r] = struct{}{}
}

func removeRef[K comparable](m map[K]map[Ref]struct{}, k K, r Ref) {
	if set := m[k]; set != nil {
		delete(set, r)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// outcome is what the caller publishes for one Ref.
type outcome struct {
	known, served           bool
	status, reason, message string
	observedGeneration      int64
	authorization           *workloadv1alpha1.Authorization
	scope                   workloadv1alpha1.Scope
	resourceName            string
}

func (ix *Index) outcomes(refs map[Ref]struct{}) map[Ref]outcome {
	out := make(map[Ref]outcome, len(refs))
	for r := range refs {
		c, ok := ix.entries[r]
		if !ok {
			out[r] = outcome{}
			continue
		}
		cond, _ := ix.Condition(r)
		out[r] = outcome{
			known:              true,
			served:             ix.served(c, nil),
			status:             string(cond.Status),
			reason:             cond.Reason,
			message:            cond.Message,
			observedGeneration: cond.ObservedGeneration,
			authorization:      c.Authorization,
			scope:              c.Scope,
			resourceName:       c.ResourceName,
		}
	}
	return out
}

// winner returns the oldest PeerAuthentication of group k.
func (ix *Index) winner(k groupKey) *Compiled {
	var w *Compiled
	for r := range ix.groups[k] {
		if c := ix.entries[r]; w == nil || older(c, w) < 0 {
			w = c
		}
	}
	return w
}

// served reports whether c's Authorization is published. winners caches
// group winners; nil means compute.
func (ix *Index) served(c *Compiled, winners map[groupKey]*Compiled) bool {
	if c.Authorization == nil {
		return false
	}
	k, ok := conflictGroup(c)
	if !ok {
		return true
	}
	w, cached := winners[k]
	if !cached {
		w = ix.winner(k)
		if winners != nil {
			winners[k] = w
		}
	}
	return w == c
}

// ForWorkload returns the sorted resource names to put in
// Workload.authorization_policies for a pod: every WORKLOAD_SELECTOR
// AuthorizationPolicy that selects it and has an Authorization, plus at most
// one selector PeerAuthentication: the oldest (Created, then
// namespace/name) that selects it.
func (ix *Index) ForWorkload(namespace string, podLabels map[string]string) []string {
	var (
		names []string
		pa    *Compiled
	)
	visit := func(set map[Ref]struct{}) {
		for r := range set {
			c := ix.entries[r]
			if c.Authorization == nil || !c.Selects(namespace, podLabels) {
				continue
			}
			if r.Kind == KindPeerAuthentication {
				if pa == nil || older(c, pa) < 0 {
					pa = c
				}
				continue
			}
			names = append(names, c.ResourceName)
		}
	}
	visit(ix.selectors[namespace])
	visit(ix.allNamespaces)
	if pa != nil {
		names = append(names, pa.ResourceName)
	}
	slices.Sort(names)
	return names
}

// Authorizations returns every resource to serve, by resource name: every
// policy with an Authorization, except the PeerAuthentications without
// selector that lose a conflict (several in one namespace, or in the root
// namespace for GLOBAL scope: the oldest, by Created then name, wins).
func (ix *Index) Authorizations() map[string]*workloadv1alpha1.Authorization {
	out := make(map[string]*workloadv1alpha1.Authorization, len(ix.entries))
	winners := map[groupKey]*Compiled{}
	for _, c := range ix.entries {
		if ix.served(c, winners) {
			out[c.ResourceName] = c.Authorization
		}
	}
	return out
}

// Condition returns the Accepted condition to write for r, conflicts
// included: a PeerAuthentication that loses a conflict gets Status False,
// Reason ReasonConflict and a message naming the winner (followed by its own
// problems, if any). ok is false when r is unknown.
func (ix *Index) Condition(r Ref) (cond metav1.Condition, ok bool) {
	c, ok := ix.entries[r]
	if !ok {
		return metav1.Condition{}, false
	}
	k, grouped := conflictGroup(c)
	if !grouped {
		return c.Condition, true
	}
	w := ix.winner(k)
	if w == c {
		return c.Condition, true
	}
	where := fmt.Sprintf("every workload in namespace %q", k.namespace)
	if k.scope == workloadv1alpha1.Scope_GLOBAL {
		where = "every workload of the mesh"
	}
	msg := fmt.Sprintf("PeerAuthentication %s/%s is older and already sets the mTLS mode of %s; this one is not enforced while that one exists (only the oldest PeerAuthentication without selector in a namespace is)",
		w.Ref.Namespace, w.Ref.Name, where)
	if c.Condition.Reason != "" && c.Condition.Status != metav1.ConditionTrue {
		msg += "; it also has problems: " + c.Condition.Message
	}
	cond = c.Condition
	cond.Status = metav1.ConditionFalse
	cond.Reason = ReasonConflict
	cond.Message = msg
	return cond, true
}

// Refs returns the Refs of every stored policy, sorted.
func (ix *Index) Refs() []Ref {
	return slices.SortedFunc(maps.Keys(ix.entries), compareRefs)
}
