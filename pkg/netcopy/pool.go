package netcopy

// BufferPool lends the copy buffers of the shared pool to
// net/http/httputil.ReverseProxy (its BufferPool field): without one, the
// reverse proxy allocates a fresh 32 KiB buffer for every response body
// it copies.
type BufferPool struct{}

// Get returns a BufSize buffer from the pool.
func (BufferPool) Get() []byte { return *bufs.Get().(*[]byte) }

// Put returns b to the pool; a buffer smaller than BufSize is dropped.
func (BufferPool) Put(b []byte) {
	if cap(b) < BufSize {
		return
	}
	b = b[:BufSize]
	bufs.Put(&b)
}
