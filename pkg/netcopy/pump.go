package netcopy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Pump copies a TCP source to dst like Copy, but a connection that stays
// idle does not keep a goroutine with the stack the copy grew: the
// goroutine that copied a burst waits for the next one for at most
// IdleHandoff (through src's read deadline), then ends after starting a
// fresh goroutine (spawn) that waits on. A new goroutine's stack is
// small, so an idle connection costs a 2 KiB stack instead of the
// 4–8 KiB that the write path (TLS, HTTP/2 framing) grows a copy
// goroutine to; a busy one pays nothing but a deadline per burst.
//
// spawn runs f on a new goroutine (go f(), or a tracked
// sync.WaitGroup.Go). done(rerr, werr) is called once, on the last
// goroutine, with Copy's results: the read error (nil at EOF) or the
// write error. count, if not nil, receives the size of every chunk
// written. Pump owns src's read deadline. It returns at once; it reports
// false, and starts nothing, when src is not a TCP connection whose socket
// it can read directly (*net.TCPConn or TCPSource, on Linux).
func Pump(dst io.Writer, src io.Reader, count func(int64), spawn func(func()), done func(rerr, werr error)) bool {
	tc, readCount := readSource(src)
	if tc == nil || !rawSupported {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	p := &pump{dst: dst, tc: tc, rc: rc, readCount: readCount, count: count, spawn: spawn, done: done}
	p.try = p.r.try
	spawn(p.run)
	return true
}

// IdleHandoff is how long a Pump goroutine that copied a burst waits for
// the next before it hands the wait to a fresh goroutine.
const IdleHandoff = 100 * time.Millisecond

type pump struct {
	dst              io.Writer
	tc               *net.TCPConn
	rc               syscall.RawConn
	readCount, count func(int64)
	spawn            func(func())
	done             func(rerr, werr error)
	try              func(fd uintptr) bool // p.r.try, allocated once

	// Set by read, used by the goroutine that called rc.Read.
	r rawRead
}

// rawRead is a poller read callback (syscall.RawConn.Read): it reads what
// the socket has into a pooled buffer taken only now; on EAGAIN it gives
// the buffer back and lets the poller wait. After it returned true, bp, n
// and err are the read's (the caller takes bp).
type rawRead struct {
	bp  *[]byte
	n   int
	err error
}

func (r *rawRead) try(fd uintptr) bool {
	if r.bp == nil {
		r.bp = bufs.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), *r.bp)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			bufs.Put(r.bp)
			r.bp = nil
			return false
		}
		r.n, r.err = n, err
		return true
	}
}

// readError is the error of a failed read(2), as net.Conn.Read reports it.
func readError(err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
}

// run waits for src to have data (or end) and copies; after the first
// burst it waits under a deadline, and hands on to a fresh goroutine when
// that passes.
func (p *pump) run() {
	for fresh := true; ; fresh = false {
		p.r.n, p.r.err = 0, nil
		if !fresh {
			_ = p.tc.SetReadDeadline(time.Now().Add(IdleHandoff))
		}
		err := p.rc.Read(p.try)
		if err != nil {
			if p.r.bp != nil {
				bufs.Put(p.r.bp)
				p.r.bp = nil
			}
			if !fresh && errors.Is(err, os.ErrDeadlineExceeded) {
				// Idle: wait on a new goroutine, with no deadline, and
				// this one's grown stack is freed.
				_ = p.tc.SetReadDeadline(time.Time{})
				p.spawn(p.run)
				return
			}
			p.done(err, nil) // closed
			return
		}
		bp, n, rerr := p.r.bp, p.r.n, p.r.err
		p.r.bp = nil
		if n > 0 {
			if p.readCount != nil {
				p.readCount(int64(n))
			}
			w, err := p.dst.Write((*bp)[:n])
			if w > 0 && p.count != nil {
				p.count(int64(w))
			}
			bufs.Put(bp)
			if err != nil {
				p.done(nil, err)
				return
			}
			continue
		}
		bufs.Put(bp)
		switch {
		case rerr != nil:
			p.done(readError(rerr), nil)
		default:
			p.done(nil, nil) // EOF
		}
		return
	}
}
