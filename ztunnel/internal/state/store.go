package state

import (
	"sync"
	"sync/atomic"
)

// Store holds the current Snapshot behind an atomic pointer: readers on the
// data path never lock. Subscribers are told (level-triggered, coalesced)
// that a new snapshot is current and read it with Current.
type Store struct {
	cur        atomic.Pointer[Snapshot]
	generation atomic.Uint64

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// NewStore returns a Store holding the empty snapshot.
func NewStore() *Store {
	st := &Store{subs: map[chan struct{}]struct{}{}}
	st.cur.Store(Empty())
	return st
}

// Current returns the current snapshot; never nil.
func (st *Store) Current() *Snapshot { return st.cur.Load() }

// Generation counts the snapshots stored so far (0: none yet).
func (st *Store) Generation() uint64 { return st.generation.Load() }

// Replace makes snap current and notifies every subscriber.
func (st *Store) Replace(snap *Snapshot) {
	st.cur.Store(snap)
	st.generation.Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	for ch := range st.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending
		}
	}
}

// Subscribe returns a channel that receives a value after each Replace
// (notifications coalesce: one pending value stands for any number of
// replacements) and a function that ends the subscription. The channel
// starts with a value pending, so a subscriber first reconciles against
// the current snapshot.
func (st *Store) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	st.mu.Lock()
	st.subs[ch] = struct{}{}
	st.mu.Unlock()
	return ch, func() {
		st.mu.Lock()
		delete(st.subs, ch)
		st.mu.Unlock()
	}
}
