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
	p.try = p.read
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
	try              func(fd uintptr) bool // p.read, allocated once

	// Set by read, used by the goroutine that called rc.Read.
	bp   *[]byte
	n    int
	rerr error
}

// read is the poller callback: it reads what the socket has into a
// pooled buffer taken only now; on EAGAIN it gives the buffer back and
// lets the poller wait (on the goroutine's small stack).
func (p *pump) read(fd uintptr) bool {
	if p.bp == nil {
		p.bp = bufs.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), *p.bp)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			bufs.Put(p.bp)
			p.bp = nil
			return false
		}
		p.n, p.rerr = n, err
		return true
	}
}

// run waits for src to have data (or end) and copies; after the first
// burst it waits under a deadline, and hands on to a fresh goroutine when
// that passes.
func (p *pump) run() {
	for fresh := true; ; fresh = false {
		p.n, p.rerr = 0, nil
		if !fresh {
			_ = p.tc.SetReadDeadline(time.Now().Add(IdleHandoff))
		}
		err := p.rc.Read(p.try)
		if err != nil {
			if p.bp != nil {
				bufs.Put(p.bp)
				p.bp = nil
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
		bp, n, rerr := p.bp, p.n, p.rerr
		p.bp = nil
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
			p.done(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", rerr)}, nil)
		default:
			p.done(nil, nil) // EOF
		}
		return
	}
}
