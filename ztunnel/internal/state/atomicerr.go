package state

import "sync/atomic"

// atomicError holds an error (or nil) for concurrent readers.
type atomicError struct{ v atomic.Pointer[error] }

func (a *atomicError) Load() error {
	if p := a.v.Load(); p != nil {
		return *p
	}
	return nil
}

func (a *atomicError) Store(err error) {
	if err == nil {
		a.v.Store(nil)
		return
	}
	a.v.Store(&err)
}
