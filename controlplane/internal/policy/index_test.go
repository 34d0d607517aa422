package policy

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// at returns t0 plus n minutes.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }

// pa compiles a STRICT PeerAuthentication created at minute age; with
// selector nil it has no selector.
func pa(ns, name string, age int, selector *securityv1alpha1.WorkloadSelector) Compiled {
	p := paObj(ns, name, paSpec{Selector: selector, MTLS: &securityv1alpha1.MutualTLS{Mode: securityv1alpha1.MTLSModeStrict}})
	p.CreationTimestamp = metav1.NewTime(at(age))
	return CompilePeerAuthentication(p, root)
}

// ap compiles an AuthorizationPolicy.
func ap(ns, name string, spec apSpec) Compiled {
	return CompileAuthorizationPolicy(apObj(ns, name, spec), root)
}

func paRef(ns, name string) Ref { return Ref{KindPeerAuthentication, ns, name} }
func apRef(ns, name string) Ref { return Ref{KindAuthorizationPolicy, ns, name} }

func TestIndexForWorkload(t *testing.T) {
	ix := NewIndex()
	for _, c := range []Compiled{
		ap("shop", "web-allow", apSpec{Selector: sel("app", "web")}),
		ap("shop", "every-pod", apSpec{Selector: sel()}),
		ap("shop", "namespace-wide", apSpec{}),
		ap("shop", "bad-audit", apSpec{Selector: sel("app", "web"), Action: securityv1alpha1.ActionAudit, Rules: []securityv1alpha1.Rule{{From: from(src{})}}}),
		ap("other", "web", apSpec{Selector: sel("app", "web")}),
		ap(root, "mesh-web", apSpec{Selector: sel("app", "web")}),
		ap(root, "mesh-wide", apSpec{}),
		pa("shop", "web-strict", 2, sel("app", "web")),
		pa("shop", "fe-older", 1, sel("app", "web", "tier", "fe")),
		pa("shop", "namespace-pa", 0, nil),
		pa(root, "mesh-web", 3, sel("app", "web")),
		pa("tie", "b", 5, sel("app", "web")),
		pa("tie", "a", 5, sel("app", "web")),
	} {
		ix.Set(c)
	}
	for _, tc := range []struct {
		name   string
		ns     string
		labels map[string]string
		want   []string
	}{
		{
			name:   "selector policies of its namespace and the root namespace, one PeerAuthentication",
			ns:     "shop",
			labels: map[string]string{"app": "web"},
			want:   []string{"ambit-system/mesh-web", "shop/every-pod", "shop/peerauthentication:web-strict", "shop/web-allow"},
		},
		{
			name:   "the oldest selecting PeerAuthentication wins",
			ns:     "shop",
			labels: map[string]string{"app": "web", "tier": "fe"},
			want:   []string{"ambit-system/mesh-web", "shop/every-pod", "shop/peerauthentication:fe-older", "shop/web-allow"},
		},
		{
			name:   "only the empty selector matches",
			ns:     "shop",
			labels: map[string]string{"app": "db"},
			want:   []string{"shop/every-pod"},
		},
		{
			name:   "namespace isolation; root namespace selectors reach every namespace",
			ns:     "other",
			labels: map[string]string{"app": "web"},
			want:   []string{"ambit-system/mesh-web", "ambit-system/peerauthentication:mesh-web", "other/web"},
		},
		{
			name:   "root namespace PeerAuthentication older than the namespace's own",
			ns:     "tie",
			labels: map[string]string{"app": "web"},
			want:   []string{"ambit-system/mesh-web", "ambit-system/peerauthentication:mesh-web"},
		},
		{
			name: "nothing selects a pod without labels elsewhere",
			ns:   "elsewhere",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ix.ForWorkload(tc.ns, tc.labels)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ForWorkload(%q, %v) (-want +got):\n%s", tc.ns, tc.labels, diff)
			}
			auths := ix.Authorizations()
			for _, name := range got {
				if auths[name] == nil {
					t.Errorf("%s is listed but not served", name)
				}
			}
		})
	}

	t.Run("equal creation times: the name decides", func(t *testing.T) {
		ix.Delete(paRef(root, "mesh-web"))
		got := ix.ForWorkload("tie", map[string]string{"app": "web"})
		want := []string{"ambit-system/mesh-web", "tie/peerauthentication:a"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestIndexAuthorizations(t *testing.T) {
	ix := NewIndex()
	all := map[string]Compiled{}
	for _, c := range []Compiled{
		pa("shop", "a", 2, nil),
		pa("shop", "c", 1, nil),
		pa("shop", "b", 1, nil), // ties with c: b wins by name
		pa("other", "only", 9, nil),
		pa("shop", "sel1", 0, sel("app", "web")),
		pa("shop", "sel2", 5, sel("app", "web")),
		pa(root, "mesh-new", 5, nil),
		pa(root, "mesh-old", 3, nil),
		pa(root, "mesh-sel", 1, sel("app", "web")),
		ap("shop", "allow", apSpec{}),
		ap("shop", "bad-allow", apSpec{Rules: []securityv1alpha1.Rule{{To: to(op{})}}}),
		ap("shop", "bad-audit", apSpec{Action: securityv1alpha1.ActionAudit, Rules: []securityv1alpha1.Rule{{To: to(op{})}}}),
		ap(root, "mesh", apSpec{Action: securityv1alpha1.ActionDeny}),
	} {
		all[c.ResourceName] = c
		ix.Set(c)
	}
	got := ix.Authorizations()
	want := []string{
		"ambit-system/mesh",
		"ambit-system/peerauthentication:mesh-old",
		"ambit-system/peerauthentication:mesh-sel",
		"other/peerauthentication:only",
		"shop/allow",
		"shop/bad-allow",
		"shop/peerauthentication:b",
		"shop/peerauthentication:sel1",
		"shop/peerauthentication:sel2",
	}
	if diff := cmp.Diff(want, slices.Sorted(maps.Keys(got))); diff != "" {
		t.Fatalf("served names (-want +got):\n%s", diff)
	}
	for name, a := range got {
		if a != all[name].Authorization {
			t.Errorf("%s: served %v, want the compiled Authorization", name, a)
		}
		if err := ztunnelCheck(name, a); err != nil {
			t.Errorf("ztunnel would NACK %s: %v", name, err)
		}
	}
}

func TestIndexCondition(t *testing.T) {
	ix := NewIndex()
	badOld := paObj("shop", "bad-old", paSpec{MTLS: &securityv1alpha1.MutualTLS{Mode: "bogus"}})
	badOld.CreationTimestamp = metav1.NewTime(at(0))
	badNew := paObj("shop", "bad-new", paSpec{MTLS: &securityv1alpha1.MutualTLS{Mode: "bogus"}})
	badNew.CreationTimestamp = metav1.NewTime(at(9))
	for _, c := range []Compiled{
		CompilePeerAuthentication(badOld, root),
		pa("shop", "loser", 1, nil),
		CompilePeerAuthentication(badNew, root),
		pa(root, "mesh-old", 1, nil),
		pa(root, "mesh-new", 2, nil),
		pa("shop", "sel", 5, sel("app", "web")),
		ap("shop", "ap", apSpec{}),
	} {
		ix.Set(c)
	}
	for _, tc := range []struct {
		name       string
		ref        Ref
		wantReason string
		wantMsg    []string
	}{
		{
			name:       "winner keeps its own condition, even Invalid",
			ref:        paRef("shop", "bad-old"),
			wantReason: securityv1alpha1.ReasonInvalid,
			wantMsg:    []string{`mtls.mode: "bogus"`},
		},
		{
			name:       "loser names the winner",
			ref:        paRef("shop", "loser"),
			wantReason: ReasonConflict,
			wantMsg:    []string{`PeerAuthentication shop/bad-old is older and already sets the mTLS mode of every workload in namespace "shop"; this one is not enforced`},
		},
		{
			name:       "invalid loser also lists its problems",
			ref:        paRef("shop", "bad-new"),
			wantReason: ReasonConflict,
			wantMsg:    []string{"PeerAuthentication shop/bad-old is older", `it also has problems: mtls.mode: "bogus"`},
		},
		{
			name:       "global loser",
			ref:        paRef(root, "mesh-new"),
			wantReason: ReasonConflict,
			wantMsg:    []string{"PeerAuthentication ambit-system/mesh-old is older and already sets the mTLS mode of every workload of the mesh"},
		},
		{name: "global winner", ref: paRef(root, "mesh-old"), wantReason: securityv1alpha1.ReasonAccepted, wantMsg: []string{MessageAccepted}},
		{name: "selector PeerAuthentication never conflicts", ref: paRef("shop", "sel"), wantReason: securityv1alpha1.ReasonAccepted, wantMsg: []string{MessageAccepted}},
		{name: "AuthorizationPolicy never conflicts", ref: apRef("shop", "ap"), wantReason: securityv1alpha1.ReasonAccepted, wantMsg: []string{MessageAccepted}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cond, ok := ix.Condition(tc.ref)
			if !ok {
				t.Fatalf("Condition(%v): unknown", tc.ref)
			}
			checkCondition(t, cond, tc.wantReason)
			containsInOrder(t, cond.Message, tc.wantMsg)
		})
	}
	t.Run("unknown ref", func(t *testing.T) {
		if _, ok := ix.Condition(paRef("shop", "nope")); ok {
			t.Fatal("ok for an unknown ref")
		}
		if _, ok := ix.Condition(apRef("shop", "loser")); ok {
			t.Fatal("ok for a PeerAuthentication's name used as an AuthorizationPolicy")
		}
	})
}

// published is what a caller writes for every known ref: the condition and
// whether (and what) is served.
type published struct {
	status, reason, message string
	served                  *workloadv1alpha1.Authorization
}

func snapshot(ix *Index) map[Ref]published {
	auths := ix.Authorizations()
	out := map[Ref]published{}
	for _, r := range ix.Refs() {
		cond, _ := ix.Condition(r)
		c := ix.entries[r]
		out[r] = published{string(cond.Status), cond.Reason, cond.Message, auths[c.ResourceName]}
	}
	return out
}

func TestIndexSetDelete(t *testing.T) {
	ix := NewIndex()
	steps := []struct {
		name      string
		set       *Compiled
		del       Ref
		want      []Ref
		wantNSWin string // winner of the "shop" namespace group after the step, "" for none
	}{
		{name: "first namespace PeerAuthentication", set: ptr(pa("shop", "a", 5, nil)), want: []Ref{paRef("shop", "a")}, wantNSWin: "a"},
		{name: "a newer one loses; the winner is unchanged", set: ptr(pa("shop", "b", 6, nil)), want: []Ref{paRef("shop", "b")}, wantNSWin: "a"},
		{name: "an older one wins; the old winner loses and the other loser's message changes", set: ptr(pa("shop", "c", 1, nil)),
			want: []Ref{paRef("shop", "a"), paRef("shop", "b"), paRef("shop", "c")}, wantNSWin: "c"},
		{name: "an AuthorizationPolicy affects only itself", set: ptr(ap("shop", "x", apSpec{})), want: []Ref{apRef("shop", "x")}, wantNSWin: "c"},
		{name: "another namespace is independent", set: ptr(pa("other", "z", 0, nil)), want: []Ref{paRef("other", "z")}, wantNSWin: "c"},
		{name: "setting a loser again changes only itself", set: ptr(pa("shop", "b", 6, nil)), want: []Ref{paRef("shop", "b")}, wantNSWin: "c"},
		{name: "deleting the winner makes the next oldest win", del: paRef("shop", "c"),
			want: []Ref{paRef("shop", "a"), paRef("shop", "b"), paRef("shop", "c")}, wantNSWin: "a"},
		{name: "deleting the winner of two: both refs", del: paRef("shop", "a"), want: []Ref{paRef("shop", "a"), paRef("shop", "b")}, wantNSWin: "b"},
		{name: "a selector PeerAuthentication is outside the group", set: ptr(pa("shop", "s", 0, sel("app", "web"))), want: []Ref{paRef("shop", "s")}, wantNSWin: "b"},
		{name: "a newer loser joins", set: ptr(pa("shop", "e", 20, nil)), want: []Ref{paRef("shop", "e")}, wantNSWin: "b"},
		{name: "the winner gains a selector and leaves the group", set: ptr(pa("shop", "b", 6, sel("app", "web"))),
			want: []Ref{paRef("shop", "b"), paRef("shop", "e")}, wantNSWin: "e"},
		{name: "and comes back without one", set: ptr(pa("shop", "b", 6, nil)), want: []Ref{paRef("shop", "b"), paRef("shop", "e")}, wantNSWin: "b"},
		{name: "a loser turns invalid: only itself", set: func() *Compiled {
			p := paObj("shop", "e", paSpec{MTLS: &securityv1alpha1.MutualTLS{Mode: "nope"}})
			p.CreationTimestamp = metav1.NewTime(at(20))
			c := CompilePeerAuthentication(p, root)
			return &c
		}(), want: []Ref{paRef("shop", "e")}, wantNSWin: "b"},
		{name: "deleting an unknown ref changes nothing", del: paRef("shop", "nope"), want: nil, wantNSWin: "b"},
		{name: "deleting a loser: only itself", del: paRef("shop", "e"), want: []Ref{paRef("shop", "e")}, wantNSWin: "b"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := snapshot(ix)
			var got []Ref
			if st.set != nil {
				got = ix.Set(*st.set)
			} else {
				got = ix.Delete(st.del)
			}
			if diff := cmp.Diff(st.want, got); diff != "" {
				t.Errorf("returned refs (-want +got):\n%s", diff)
			}
			// Whatever the exact expectation, every ref whose published
			// outcome changed must have been returned.
			after := snapshot(ix)
			for _, r := range ix.Refs() {
				if before[r] != after[r] && !slices.Contains(got, r) {
					t.Errorf("%v changed (%+v -> %+v) but was not returned", r, before[r], after[r])
				}
			}
			for r := range before {
				if _, still := after[r]; !still && !slices.Contains(got, r) {
					t.Errorf("%v was removed but not returned", r)
				}
			}
			// The namespace group serves exactly its winner.
			var served []string
			for name, a := range ix.Authorizations() {
				if strings.HasPrefix(name, "shop/peerauthentication:") && a.GetScope() == workloadv1alpha1.Scope_NAMESPACE {
					served = append(served, strings.TrimPrefix(name, "shop/peerauthentication:"))
				}
			}
			var want []string
			if st.wantNSWin != "" {
				want = []string{st.wantNSWin}
			}
			if diff := cmp.Diff(want, served); diff != "" {
				t.Errorf("served namespace PeerAuthentications (-want +got):\n%s", diff)
			}
		})
	}
	if _, ok := ix.Condition(paRef("shop", "c")); ok {
		t.Error("Condition of a deleted ref is known")
	}
}

func ptr[T any](v T) *T { return &v }
