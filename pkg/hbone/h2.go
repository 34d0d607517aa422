package hbone

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// This file is HBONE's HTTP/2 connection: the CONNECT subset of RFC 9113
// that HBONE uses (streams, flow control, SETTINGS, PING, GOAWAY,
// RST_STREAM), on x/net's Framer and HPACK codec, which do all the wire
// encoding and the per-frame validation.
//
// x/net's own client and server are general HTTP/2 stacks: every stream
// goes through several goroutines (a frame reader, a serve loop, a body
// writer, net.Pipe on the client) and each hand-off between them is a
// scheduler wake-up, which is most of the per-request cost of a proxy on a
// small node (docs/benchmarks.md). Here a stream's writer frames and writes
// its data itself, under the connection's write lock, and the one reader
// goroutine per connection puts received data straight into the stream's
// buffer: one hand-off per direction, none per frame. A stream holds no
// goroutine and no buffer while idle.

// Protocol defaults of RFC 9113 §6.5.2 before the peer's SETTINGS.
const (
	initialWindow    = 65535
	initialMaxFrame  = 16 << 10
	maxWindow        = 1<<31 - 1
	maxHeaderList    = 64 << 10 // the header list we accept, decoded
	defaultMaxStream = 1000     // peer's MAX_CONCURRENT_STREAMS until it says
)

// errStreamClosed is what a stream's Read or Write returns after the local
// side closed it.
var errStreamClosed = io.ErrClosedPipe

// streamResetError says the peer reset a stream (RST_STREAM).
type streamResetError struct{ code http2.ErrCode }

func (e streamResetError) Error() string { return "stream reset by peer: " + e.code.String() }

// h2Config is what differs between the client and the server end.
type h2Config struct {
	server                   bool
	streamWindow, connWindow int32
	maxReadFrame             uint32
	maxStreams               uint32 // MAX_CONCURRENT_STREAMS we advertise (server)
	// onRequest is called, in the reader goroutine, for each new stream a
	// client opens (server only); it must not block.
	onRequest func(s *stream, f *http2.MetaHeadersFrame)
	log       *slog.Logger
}

// h2conn is one HTTP/2 connection over an established TLS connection.
type h2conn struct {
	cfg  h2Config
	nc   net.Conn // the TLS connection
	raw  net.Conn // the socket under it, closed to abort
	rfr  *http2.Framer
	done chan struct{} // closed when the reader has stopped

	wmu  sync.Mutex // serializes frame writes; taken before mu
	wbuf bytes.Buffer
	wfr  *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	werr error

	// Control frames (WINDOW_UPDATE, RST_STREAM, PING and SETTINGS acks,
	// GOAWAY) are queued here and sent by whoever holds wmu next, so the
	// reader never waits for the write lock: a reader blocked behind a
	// writer that is blocked on a peer doing the same would deadlock both
	// ends.
	cmu       sync.Mutex
	ctrl      bytes.Buffer
	cfr       *http2.Framer // writes to ctrl
	hasCtrl   atomic.Bool
	tableSize uint32 // peer's HEADER_TABLE_SIZE to apply (guarded by cmu)
	newTable  bool

	mu           sync.Mutex
	streams      map[uint32]*stream
	nextID       uint32 // client: next stream ID to use
	lastPeerID   uint32 // server: highest stream ID the client opened
	reserved     int    // client: streams promised by reserve, not yet opened
	sendWin      int64  // connection send window the peer granted
	winCh        chan struct{}
	peerInitWin  int32
	peerMaxFrame uint32
	peerMaxConc  uint32
	recvWin      int64 // connection window the peer may still use
	recvUnacked  int64 // consumed, not yet returned in a WINDOW_UPDATE
	goAwaySent   bool
	goAwayRecv   bool
	lingering    bool   // closeIdle ran: the write side is shut
	err          error  // set once the connection is dead
	onIdle       func() // called (without locks) when the last stream ends after GOAWAY
}

// stream is one CONNECT stream. Its state is guarded by c.mu.
type stream struct {
	c  *h2conn
	id uint32

	sendWin   int64
	sentEnd   bool // END_STREAM or RST_STREAM sent
	recv      chunkBuf
	recvEnd   bool  // END_STREAM received
	recvErr   error // reset by the peer, or connection failure
	inflow    int64 // what the peer may still send on this stream
	unacked   int64
	closed    bool // closed locally
	removed   bool
	readable  chan struct{} // signaled when recv, recvEnd or recvErr changes
	writable  chan struct{} // signaled when sendWin grows or the stream ends
	cancelCtx context.CancelFunc
	ctx       context.Context

	// Client only: the response.
	respCh chan struct{} // closed once status is set or the stream failed
	status int

	readDeadline, writeDeadline atomic.Pointer[time.Time]

	// sink, when set, takes the received data instead of read (see
	// deliverTo).
	sink *sink
}

// sink is where a stream's received data goes when the connection's reader
// writes it to a TCP connection itself: no goroutine waits on an idle
// stream, and no hand-off happens per chunk while dst takes data at once.
// Only when dst would block does a drain goroutine take over, until the
// buffer is empty again.
type sink struct {
	dst      *net.TCPConn
	rc       syscall.RawConn
	count    func(int64)
	done     func(error)
	draining bool // a drain goroutine owns delivery (guarded by c.mu)
	ended    bool // EOF or failure decided (guarded by c.mu)
}

func newH2conn(nc net.Conn, cfg h2Config) *h2conn {
	raw := nc
	if u, ok := nc.(interface{ NetConn() net.Conn }); ok {
		raw = u.NetConn()
	}
	c := &h2conn{
		cfg:          cfg,
		nc:           nc,
		raw:          raw,
		done:         make(chan struct{}),
		streams:      map[uint32]*stream{},
		nextID:       1,
		sendWin:      initialWindow,
		winCh:        make(chan struct{}),
		peerInitWin:  initialWindow,
		peerMaxFrame: initialMaxFrame,
		peerMaxConc:  defaultMaxStream,
		recvWin:      int64(cfg.connWindow),
	}
	c.rfr = http2.NewFramer(nil, bufio.NewReaderSize(nc, 16<<10))
	c.rfr.SetMaxReadFrameSize(cfg.maxReadFrame)
	c.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rfr.MaxHeaderListSize = maxHeaderList
	c.wfr = http2.NewFramer(&c.wbuf, nil)
	c.cfr = http2.NewFramer(&c.ctrl, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start writes this end's connection preface: the client magic (client),
// SETTINGS and the connection window increment.
func (c *h2conn) start() error {
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.streamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: c.cfg.maxReadFrame},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	}
	if c.cfg.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.maxStreams})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	return c.write(func() error {
		if !c.cfg.server {
			c.wbuf.WriteString(http2.ClientPreface)
		}
		if err := c.wfr.WriteSettings(settings...); err != nil {
			return err
		}
		if inc := c.cfg.connWindow - initialWindow; inc > 0 {
			return c.wfr.WriteWindowUpdate(0, uint32(inc))
		}
		return nil
	})
}

// write runs frame, which appends frames to the write buffer with c.wfr,
// and writes the buffer to the connection: one TLS write for all of them.
func (c *h2conn) write(frame func() error) error {
	c.wmu.Lock()
	defer c.unlockWrite()
	return c.writeLocked(frame)
}

// unlockWrite releases wmu, first sending control frames queued while it
// was held (and any queued during that send).
func (c *h2conn) unlockWrite() {
	for {
		c.wmu.Unlock()
		if !c.hasCtrl.Load() || !c.wmu.TryLock() {
			return
		}
		_ = c.writeLocked(nil)
	}
}

// control queues a control frame and sends it now if the write lock is
// free; it never blocks on the connection.
func (c *h2conn) control(frame func(fr *http2.Framer) error) {
	c.cmu.Lock()
	_ = frame(c.cfr)
	c.hasCtrl.Store(true)
	c.cmu.Unlock()
	if c.wmu.TryLock() {
		_ = c.writeLocked(nil)
		c.unlockWrite()
	}
}

// writeLocked writes the queued control frames and then frame's (frame may
// be nil) in one TLS write.
func (c *h2conn) writeLocked(frame func() error) error {
	if c.werr != nil {
		if c.hasCtrl.Load() { // never sent: the connection is broken
			c.cmu.Lock()
			c.ctrl.Reset()
			c.hasCtrl.Store(false)
			c.cmu.Unlock()
		}
		return c.werr
	}
	if c.hasCtrl.Load() {
		c.cmu.Lock()
		c.wbuf.Write(c.ctrl.Bytes())
		c.ctrl.Reset()
		if c.newTable {
			c.enc.SetMaxDynamicTableSizeLimit(c.tableSize)
			c.newTable = false
		}
		c.hasCtrl.Store(false)
		c.cmu.Unlock()
	}
	if frame != nil {
		if err := frame(); err != nil {
			c.wbuf.Reset()
			return err
		}
	}
	if c.wbuf.Len() == 0 {
		return nil
	}
	rec, _ := c.raw.(*recordConn) // one system call for all the records
	if rec != nil {
		rec.gather()
	}
	_, err := c.nc.Write(c.wbuf.Bytes())
	if rec != nil {
		if ferr := rec.flush(); err == nil {
			err = ferr
		}
	}
	c.wbuf.Reset()
	if c.wbuf.Cap() > 128<<10 {
		c.wbuf = bytes.Buffer{} // do not keep a large buffer for an idle connection
	}
	if err != nil {
		c.werr = fmt.Errorf("hbone: writing to the HBONE connection: %w", err)
		go c.fail(c.werr) // fail takes mu; a caller may hold streams' state
		return c.werr
	}
	return nil
}

// writeHeaders encodes fields (name, value pairs; pseudo-headers first) as
// a HEADERS frame, with CONTINUATION frames when the block is larger than
// the peer's frame size. Called with wmu held.
func (c *h2conn) writeHeaders(id uint32, endStream bool, fields ...string) error {
	c.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		if err := c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
			return err
		}
	}
	c.mu.Lock()
	maxFrame := int(c.peerMaxFrame)
	c.mu.Unlock()
	block := c.hbuf.Bytes()
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	if err := c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		if err := c.wfr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

// readLoop reads and handles frames until the connection fails. The first
// frame must be the peer's SETTINGS.
func (c *h2conn) readLoop() {
	defer close(c.done)
	first := true
	for {
		f, err := c.rfr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("hbone: %w", se))
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAwayAndFail(http2.ErrCode(ce), fmt.Errorf("hbone: HTTP/2 protocol error from the peer: %w", err))
				return
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.fail(fmt.Errorf("hbone: reading from the HBONE connection: %w", err))
			return
		}
		if first {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				c.fail(fmt.Errorf("hbone: the peer refused the connection: GOAWAY %s %q", g.ErrCode, g.DebugData()))
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAwayAndFail(http2.ErrCodeProtocol, fmt.Errorf("hbone: the peer's first frame is %s, not SETTINGS", f.Header().Type))
				return
			}
			first = false
			_ = c.nc.SetReadDeadline(time.Time{}) // the server's handshake deadline
		}
		if err := c.handle(f); err != nil {
			var ce http2.ConnectionError
			code := http2.ErrCodeProtocol
			if errors.As(err, &ce) {
				code = http2.ErrCode(ce)
			}
			c.goAwayAndFail(code, err)
			return
		}
	}
}

// connError is a connection error of the peer's making, answered with
// GOAWAY.
func connError(code http2.ErrCode, format string, args ...any) error {
	return fmt.Errorf("hbone: "+format+": %w", append(args, http2.ConnectionError(code))...)
}

func (c *h2conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.handleData(f)
	case *http2.MetaHeadersFrame:
		return c.handleHeaders(f)
	case *http2.WindowUpdateFrame:
		return c.handleWindowUpdate(f)
	case *http2.SettingsFrame:
		return c.handleSettings(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		s := c.streams[f.StreamID]
		if s != nil {
			s.recvErr = fmt.Errorf("hbone: %w", streamResetError{f.ErrCode})
			s.sentEnd = true // nothing more may be sent
			c.removeLocked(s)
		}
		c.mu.Unlock()
		return nil
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		data := f.Data
		c.control(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
		return nil
	case *http2.GoAwayFrame:
		c.handleGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		return connError(http2.ErrCodeProtocol, "the server sent PUSH_PROMISE, which HBONE clients disable")
	}
	return nil // PRIORITY and unknown frame types are ignored (RFC 9113 §5.5)
}

func (c *h2conn) handleData(f *http2.DataFrame) error {
	n := int64(f.Header().Length) // flow control counts padding too
	data := f.Data()
	c.mu.Lock()
	if n > c.recvWin {
		c.mu.Unlock()
		return connError(http2.ErrCodeFlowControl, "the peer sent %d bytes beyond the connection window", n-c.recvWin)
	}
	c.recvWin -= n
	s := c.streams[f.StreamID]
	if s == nil || s.recvEnd {
		known := f.StreamID <= c.highestIDLocked()
		c.recvUnacked += n
		wu := c.connCreditLocked()
		c.mu.Unlock()
		if !known {
			return connError(http2.ErrCodeProtocol, "DATA on stream %d, which was never opened", f.StreamID)
		}
		c.sendCredit(0, 0, wu)
		if s != nil {
			c.resetStream(f.StreamID, http2.ErrCodeStreamClosed, errors.New("hbone: DATA after END_STREAM"))
		}
		return nil
	}
	if n > s.inflow {
		c.recvUnacked += n
		wu := c.connCreditLocked()
		c.mu.Unlock()
		c.sendCredit(0, 0, wu)
		c.resetStream(f.StreamID, http2.ErrCodeFlowControl, fmt.Errorf("hbone: the peer sent %d bytes beyond stream %d's window", n-s.inflow, f.StreamID))
		return nil
	}
	s.inflow -= n
	if pad := n - int64(len(data)); pad > 0 {
		// Padding is never read: credit it now.
		s.unacked += pad
		c.recvUnacked += pad
	}
	if k := s.sink; k != nil && !k.draining && !k.ended && s.recv.len() == 0 && !s.closed {
		c.mu.Unlock()
		return c.deliver(s, k, data, f.StreamEnded())
	}
	if len(data) > 0 && !s.closed && (s.sink == nil || !s.sink.ended) {
		s.recv.write(data)
	} else if len(data) > 0 {
		c.recvUnacked += int64(len(data)) // nobody will read it
	}
	if f.StreamEnded() {
		s.recvEnd = true
		c.maybeRemoveLocked(s)
	}
	signal(s.readable)
	c.startDrainLocked(s)
	wu := c.connCreditLocked()
	c.mu.Unlock()
	c.sendCredit(0, 0, wu)
	return nil
}

// deliver writes data to s's sink without blocking, in the reader; what
// dst cannot take now is buffered for a drain goroutine. end is the
// stream's END_STREAM.
func (c *h2conn) deliver(s *stream, k *sink, data []byte, end bool) error {
	n, err := writeNonblocking(k.rc, data)
	if n > 0 && k.count != nil {
		k.count(int64(n))
	}
	c.mu.Lock()
	s.unacked += int64(n)
	c.recvUnacked += int64(n)
	sInc := s.streamCreditLocked()
	if err != nil {
		k.ended = true
		c.recvUnacked += int64(len(data) - n)
		wu := c.connCreditLocked()
		c.mu.Unlock()
		c.sendCredit(s.id, 0, wu)
		k.done(err)
		return nil
	}
	if n < len(data) && !s.removed && !s.closed {
		s.recv.write(data[n:])
	} else if n < len(data) {
		c.recvUnacked += int64(len(data) - n)
	}
	if end {
		s.recvEnd = true
	}
	closeWrite := false
	if s.recv.len() == 0 && s.recvEnd {
		k.ended, closeWrite = true, true
		c.maybeRemoveLocked(s)
	} else {
		c.startDrainLocked(s)
	}
	wu := c.connCreditLocked()
	c.mu.Unlock()
	c.sendCredit(s.id, sInc, wu)
	if closeWrite {
		k.done(k.dst.CloseWrite())
	}
	return nil
}

// startDrainLocked starts the drain goroutine of s's sink when data or the
// end of stream waits for it and none runs.
func (c *h2conn) startDrainLocked(s *stream) {
	k := s.sink
	if k == nil || k.draining || k.ended || (s.recv.len() == 0 && !s.recvEnd && !s.removed) {
		return
	}
	k.draining = true
	go c.drain(s, k)
}

// drain writes s's buffered data to the sink, blocking, until the buffer is
// empty; then the reader delivers again, or the stream's end is passed on.
func (c *h2conn) drain(s *stream, k *sink) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := (*bp)[:0]
	for {
		c.mu.Lock()
		if s.recv.len() == 0 || s.closed {
			k.draining = false
			var err error
			switch {
			case s.closed:
				err = errStreamClosed
			case s.recvEnd:
			case s.removed:
				err = s.recvErr
				if err == nil {
					err = errStreamClosed
				}
			default:
				c.mu.Unlock()
				return // the reader delivers the next data
			}
			k.ended = true
			c.maybeRemoveLocked(s)
			c.mu.Unlock()
			if err == nil {
				err = k.dst.CloseWrite()
			}
			k.done(err)
			return
		}
		buf = buf[:min(s.recv.len(), cap(buf))]
		s.recv.read(buf)
		c.mu.Unlock()
		n, err := k.dst.Write(buf)
		if n > 0 && k.count != nil {
			k.count(int64(n))
		}
		c.mu.Lock()
		s.unacked += int64(len(buf))
		c.recvUnacked += int64(len(buf))
		sInc := s.streamCreditLocked()
		wu := c.connCreditLocked()
		if err != nil {
			k.draining, k.ended = false, true
		}
		c.mu.Unlock()
		c.sendCredit(s.id, sInc, wu)
		if err != nil {
			k.done(err)
			return
		}
	}
}

// streamCreditLocked returns the stream WINDOW_UPDATE increment to send now
// (0: none yet), by the same quarter-window rule as the connection's.
func (s *stream) streamCreditLocked() uint32 {
	if s.recvEnd || s.removed || s.unacked < int64(s.c.cfg.streamWindow)/4 {
		return 0
	}
	inc := s.unacked
	s.inflow += inc
	s.unacked = 0
	return uint32(inc)
}

// deliverTo makes the connection's reader write s's received data to dst
// (see sink); count, if not nil, gets every chunk's size as it is written.
// done is called once delivery ended: nil after the end of stream was
// passed on as dst.CloseWrite, else the error (dst failed, or the stream
// was reset or closed). It reports false, and does nothing, when dst
// offers no raw connection.
func (s *stream) deliverTo(dst *net.TCPConn, count func(int64), done func(error)) bool {
	rc, err := dst.SyscallConn()
	if err != nil {
		return false
	}
	c := s.c
	c.mu.Lock()
	s.sink = &sink{dst: dst, rc: rc, count: count, done: done}
	c.startDrainLocked(s)
	c.mu.Unlock()
	return true
}

// writeNonblocking writes what fd takes now; a full socket buffer is not
// an error (n < len(p)).
func writeNonblocking(rc syscall.RawConn, p []byte) (int, error) {
	n := 0
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			k, err := syscall.Write(int(fd), p[n:])
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				werr = err
				break
			}
			n += k
		}
		return true
	})
	if werr == nil {
		werr = err
	}
	if werr != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Err: werr}
	}
	return n, nil
}

func (c *h2conn) highestIDLocked() uint32 {
	if c.cfg.server {
		return c.lastPeerID
	}
	return c.nextID - 2
}

func (c *h2conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		if c.cfg.server || s.status != 0 {
			// Trailers: they must end the stream.
			if !f.StreamEnded() {
				c.mu.Unlock()
				c.resetStream(id, http2.ErrCodeProtocol, errors.New("hbone: HEADERS in the middle of a stream"))
				return nil
			}
			s.recvEnd = true
			signal(s.readable)
			c.mu.Unlock()
			return nil
		}
		status, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil || status < 100 || status > 999 {
			c.mu.Unlock()
			c.resetStream(id, http2.ErrCodeProtocol, fmt.Errorf("hbone: response with bad :status %q", f.PseudoValue("status")))
			return nil
		}
		if status < 200 {
			c.mu.Unlock()
			return nil // informational; the final response follows
		}
		s.status = status
		close(s.respCh)
		if f.StreamEnded() {
			s.recvEnd = true
			signal(s.readable)
		}
		c.mu.Unlock()
		return nil
	}
	if !c.cfg.server {
		known := id <= c.highestIDLocked()
		c.mu.Unlock()
		if known {
			return nil // a stream we already reset
		}
		return connError(http2.ErrCodeProtocol, "HEADERS on stream %d, which the client never opened", id)
	}
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return connError(http2.ErrCodeProtocol, "HEADERS opening stream %d, which is not a new odd stream ID (last %d)", id, c.lastPeerID)
	}
	c.lastPeerID = id
	if c.goAwaySent || c.err != nil {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream, nil)
		return nil
	}
	if uint32(len(c.streams)) >= c.cfg.maxStreams {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream, nil)
		return nil
	}
	s := c.newStreamLocked(id)
	s.recvEnd = f.StreamEnded()
	c.mu.Unlock()
	c.cfg.onRequest(s, f)
	return nil
}

func (c *h2conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if c.sendWin+inc > maxWindow {
			return connError(http2.ErrCodeFlowControl, "WINDOW_UPDATE grows the connection window beyond 2^31-1")
		}
		c.sendWin += inc
		close(c.winCh)
		c.winCh = make(chan struct{})
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		return nil
	}
	if s.sendWin+inc > maxWindow {
		go c.resetStream(f.StreamID, http2.ErrCodeFlowControl, errors.New("hbone: WINDOW_UPDATE grows the stream window beyond 2^31-1"))
		return nil
	}
	s.sendWin += inc
	signal(s.writable)
	return nil
}

func (c *h2conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	var tableSize uint32
	var haveTable bool
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - int64(c.peerInitWin)
			for _, s := range c.streams {
				if s.sendWin+delta > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				s.sendWin += delta
				signal(s.writable)
			}
			c.peerInitWin = int32(st.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxConc = st.Val
		case http2.SettingHeaderTableSize:
			tableSize, haveTable = st.Val, true
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("hbone: bad SETTINGS from the peer: %w", err)
	}
	c.control(func(fr *http2.Framer) error {
		if haveTable {
			c.tableSize, c.newTable = tableSize, true
		}
		return fr.WriteSettingsAck()
	})
	return nil
}

func (c *h2conn) handleGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goAwayRecv = true
	var refused []*stream
	if !c.cfg.server {
		for id, s := range c.streams {
			if id > f.LastStreamID {
				refused = append(refused, s)
			}
		}
	}
	for _, s := range refused {
		s.recvErr = fmt.Errorf("hbone: the server is going away and did not take stream %d: %w", s.id, streamResetError{http2.ErrCodeRefusedStream})
		s.sentEnd = true
		c.removeLocked(s)
	}
	c.mu.Unlock()
}

// idleAfterGoAwayLocked reports whether the connection has been told to go
// away (either way) and has no streams left: it can be closed.
func (c *h2conn) idleAfterGoAwayLocked() bool {
	return (c.goAwaySent || c.goAwayRecv) && len(c.streams) == 0 && c.reserved == 0 && c.err == nil
}

func (c *h2conn) notifyIdle(idle bool) {
	if idle && c.onIdle != nil {
		c.onIdle()
	}
}

// goAway queues GOAWAY with the last stream ID the peer opened: streams
// open now finish, new ones are refused.
func (c *h2conn) goAway(code http2.ErrCode, debug string) {
	c.mu.Lock()
	if c.goAwaySent {
		c.mu.Unlock()
		return
	}
	c.goAwaySent = true
	last := c.lastPeerID
	idle := c.idleAfterGoAwayLocked()
	c.mu.Unlock()
	c.control(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, []byte(debug)) })
	go c.notifyIdle(idle)
}

// goAwayAndFail sends GOAWAY (waiting at most a second for a write in
// progress) and closes the connection.
func (c *h2conn) goAwayAndFail(code http2.ErrCode, err error) {
	if code != http2.ErrCodeNo {
		c.cfg.log.Debug("closing HBONE connection", "peer", c.raw.RemoteAddr().String(), "error", err)
	}
	c.goAway(code, err.Error())
	_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second)) // a stuck write gives up the lock
	c.wmu.Lock()
	_ = c.writeLocked(nil)
	c.wmu.Unlock()
	c.fail(err)
}

// fail marks the connection dead, fails every stream and closes the socket.
func (c *h2conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	for _, s := range c.streams {
		s.recvErr = err
		s.sentEnd = true
		c.removeLocked(s)
	}
	close(c.winCh)
	c.winCh = make(chan struct{})
	c.mu.Unlock()
	c.raw.Close()
}

// idleLinger bounds how long a connection that ended after GOAWAY keeps
// reading, once it has sent its last frames, for the peer to close too.
const idleLinger = time.Second

// closeIdle ends a connection whose streams are all done after GOAWAY. It
// sends what is queued, then TLS close_notify and a TCP FIN, and lets the
// reader run until the peer closes as well (or idleLinger passes); the
// reader then closes the socket. Closing at once would reset the
// connection when frames of the peer (a WINDOW_UPDATE, a PING, a stream
// the GOAWAY refused) are still unread, and a reset throws away what the
// kernel has not sent yet: the end of the last answer.
func (c *h2conn) closeIdle() {
	c.mu.Lock()
	if c.err != nil || c.lingering {
		c.mu.Unlock()
		return
	}
	c.lingering = true
	c.mu.Unlock()
	_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second)) // a stuck write gives up the lock
	c.wmu.Lock()
	err := c.writeLocked(nil)
	if err == nil {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite() // close_notify
		}
	}
	if err == nil {
		err = shutdownSocketWrite(c.raw)
	}
	if c.werr == nil {
		c.werr = errors.New("hbone: connection closed after GOAWAY")
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("hbone: closing the HBONE connection after GOAWAY: %w", err))
		return
	}
	_ = c.raw.SetReadDeadline(time.Now().Add(idleLinger))
}

// shutdownSocketWrite sends a TCP FIN on the socket under c (a recordConn or the
// socket itself); a connection without a write side to close is left to
// the reader's deadline.
func shutdownSocketWrite(c net.Conn) error {
	if rc, ok := c.(*recordConn); ok {
		c = rc.Conn
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// close closes the connection, politely (GOAWAY) if it is still healthy.
func (c *h2conn) close() {
	c.goAwayAndFail(http2.ErrCodeNo, errors.New("hbone: connection closed"))
}

func (c *h2conn) newStreamLocked(id uint32) *stream {
	s := &stream{
		c:        c,
		id:       id,
		sendWin:  int64(c.peerInitWin),
		inflow:   int64(c.cfg.streamWindow),
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
	}
	c.streams[id] = s
	return s
}

// removeLocked forgets s: data still buffered is credited back to the
// connection and every waiter wakes.
func (c *h2conn) removeLocked(s *stream) {
	if s.removed {
		return
	}
	s.removed = true
	delete(c.streams, s.id)
	if s.closed || !s.recvEnd {
		// Nobody will read what is buffered (a stream that ended cleanly
		// keeps it for its reader; closeStream drops it).
		c.recvUnacked += int64(s.recv.len())
		s.recv.reset()
	}
	signal(s.readable)
	signal(s.writable)
	if s.respCh != nil && s.status == 0 {
		close(s.respCh)
	}
	if s.cancelCtx != nil {
		s.cancelCtx()
	}
	c.startDrainLocked(s) // a sink learns that the stream ended
	if c.idleAfterGoAwayLocked() && c.onIdle != nil {
		go c.onIdle()
	}
}

// resetStream sends RST_STREAM for id and forgets the stream; err (if not
// nil) is what its reads and writes return.
func (c *h2conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		if err == nil {
			err = fmt.Errorf("hbone: stream reset: %s", code)
		}
		if s.recvErr == nil {
			s.recvErr = err
		}
		s.sentEnd = true
		c.removeLocked(s)
	}
	c.mu.Unlock()
	c.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// connCreditLocked returns the connection WINDOW_UPDATE increment to send
// now (0: none yet). Credit goes back in batches of a quarter window, so
// the peer never waits for it and small writes cause no updates.
func (c *h2conn) connCreditLocked() uint32 {
	if c.recvUnacked < int64(c.cfg.connWindow)/4 {
		return 0
	}
	inc := c.recvUnacked
	c.recvUnacked = 0
	c.recvWin += inc
	return uint32(inc)
}

// sendCredit writes WINDOW_UPDATE frames for a stream and the connection
// (zero increments are skipped).
func (c *h2conn) sendCredit(id uint32, streamInc, connInc uint32) {
	if streamInc == 0 && connInc == 0 {
		return
	}
	c.control(func(fr *http2.Framer) error {
		if streamInc > 0 {
			if err := fr.WriteWindowUpdate(id, streamInc); err != nil {
				return err
			}
		}
		if connInc > 0 {
			return fr.WriteWindowUpdate(0, connInc)
		}
		return nil
	})
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// read reads buffered data of s, waiting (under the read deadline) for
// some. p empty: wait until a read would not block, consuming nothing.
func (s *stream) read(p []byte) (int, error) {
	c := s.c
	for {
		c.mu.Lock()
		if s.closed || s.sink != nil {
			c.mu.Unlock()
			return 0, errStreamClosed
		}
		if err := deadlinePassed(&s.readDeadline); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		if s.recv.len() > 0 {
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := s.recv.read(p)
			s.unacked += int64(n)
			c.recvUnacked += int64(n)
			sInc := s.streamCreditLocked()
			cInc := c.connCreditLocked()
			c.mu.Unlock()
			c.sendCredit(s.id, sInc, cInc)
			return n, nil
		}
		if s.recvEnd {
			c.maybeRemoveLocked(s)
			c.mu.Unlock()
			return 0, io.EOF
		}
		if s.recvErr != nil {
			err := s.recvErr
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		if err := waitFor(s.readable, nil, &s.readDeadline); err != nil {
			return 0, err
		}
	}
}

// write sends p as DATA frames as the flow-control windows allow, waiting
// (under the write deadline) for window. end sets END_STREAM on the last
// frame (p may be empty then).
func (s *stream) write(p []byte, end bool) (int, error) {
	c := s.c
	written := 0
	for {
		c.mu.Lock()
		switch {
		case s.closed:
			c.mu.Unlock()
			return written, errStreamClosed
		case s.sentEnd || s.removed:
			err := s.recvErr
			c.mu.Unlock()
			if err == nil {
				err = errStreamClosed
			}
			return written, err
		}
		if err := deadlinePassed(&s.writeDeadline); err != nil {
			c.mu.Unlock()
			return written, err
		}
		if len(p) == 0 && !end {
			c.mu.Unlock()
			return 0, nil
		}
		n := max(min(int64(len(p)), s.sendWin, c.sendWin), 0)
		if n == 0 && len(p) > 0 {
			winCh := c.winCh
			c.mu.Unlock()
			if err := waitFor(s.writable, winCh, &s.writeDeadline); err != nil {
				return written, err
			}
			continue
		}
		s.sendWin -= n
		c.sendWin -= n
		maxFrame := int(c.peerMaxFrame)
		last := end && n == int64(len(p))
		if last {
			s.sentEnd = true
		}
		c.mu.Unlock()
		chunk := p[:n]
		err := c.write(func() error {
			for {
				k := min(len(chunk), maxFrame)
				if err := c.wfr.WriteData(s.id, last && k == len(chunk), chunk[:k]); err != nil {
					return err
				}
				chunk = chunk[k:]
				if len(chunk) == 0 {
					return nil
				}
			}
		})
		if err != nil {
			return written, err
		}
		written += int(n)
		p = p[n:]
		if len(p) == 0 {
			if last {
				c.mu.Lock()
				c.maybeRemoveLocked(s)
				c.mu.Unlock()
			}
			return written, nil
		}
	}
}

// maybeRemoveLocked forgets s once both directions have ended.
func (c *h2conn) maybeRemoveLocked(s *stream) {
	if s.sentEnd && (s.recvEnd || s.recvErr != nil) && s.recv.len() == 0 {
		c.removeLocked(s)
	}
}

// closeStream ends s locally: a stream whose both directions finished is
// simply forgotten; otherwise it is reset with CANCEL (or code).
func (s *stream) closeStream(code http2.ErrCode) {
	c := s.c
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return
	}
	s.closed = true
	clean := s.sentEnd && s.recvEnd
	reset := !s.removed && !clean
	if n := s.recv.len(); n > 0 {
		c.recvUnacked += int64(n)
		s.recv.reset()
	}
	if s.removed || clean {
		c.removeLocked(s)
	}
	c.startDrainLocked(s)
	wu := c.connCreditLocked()
	c.mu.Unlock()
	c.sendCredit(0, 0, wu)
	if reset {
		c.resetStream(s.id, code, errStreamClosed)
	}
}

func deadlinePassed(dl *atomic.Pointer[time.Time]) error {
	if t := dl.Load(); t != nil && !t.IsZero() && !time.Now().Before(*t) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// waitFor waits for a signal on a or b (either may be nil) until the
// deadline in dl (read at the start) passes.
func waitFor(a, b chan struct{}, dl *atomic.Pointer[time.Time]) error {
	var timeout <-chan time.Time
	if t := dl.Load(); t != nil && !t.IsZero() {
		d := time.Until(*t)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		tm := time.NewTimer(d)
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case <-a:
	case <-b:
	case <-timeout:
		return os.ErrDeadlineExceeded
	}
	return nil
}

// chunkBuf is a stream's receive buffer: pooled 16 KiB chunks, none held
// when empty.
type chunkBuf struct {
	chunks [][]byte // each a pooled chunk's filled part, first one partly read
	bufs   []*[]byte
	off    int // read offset in chunks[0]
	n      int
}

const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

func (b *chunkBuf) len() int { return b.n }

func (b *chunkBuf) write(p []byte) {
	b.n += len(p)
	for len(p) > 0 {
		if k := len(b.bufs); k > 0 {
			last := *b.bufs[k-1]
			if room := cap(last) - len(last); room > 0 {
				m := min(room, len(p))
				last = append(last, p[:m]...)
				*b.bufs[k-1] = last
				p = p[m:]
				continue
			}
		}
		bp := chunkPool.Get().(*[]byte)
		*bp = (*bp)[:0]
		b.bufs = append(b.bufs, bp)
	}
}

func (b *chunkBuf) read(p []byte) int {
	n := 0
	for n < len(p) && len(b.bufs) > 0 {
		cur := *b.bufs[0]
		m := copy(p[n:], cur[b.off:])
		n += m
		b.off += m
		if b.off == len(cur) {
			chunkPool.Put(b.bufs[0])
			b.bufs[0] = nil
			b.bufs = b.bufs[1:]
			b.off = 0
		}
	}
	b.n -= n
	if len(b.bufs) == 0 {
		b.bufs = nil
	}
	return n
}

func (b *chunkBuf) reset() {
	for _, bp := range b.bufs {
		chunkPool.Put(bp)
	}
	*b = chunkBuf{}
}

// canOpen reports whether the client connection can take one more stream
// beyond those open and reserved, under limit and the server's
// MAX_CONCURRENT_STREAMS.
func (c *h2conn) reserve(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.goAwayRecv || c.goAwaySent || c.nextID > math.MaxInt32-2 {
		return false
	}
	open := len(c.streams) + c.reserved
	if open >= limit || open >= int(c.peerMaxConc) {
		return false
	}
	c.reserved++
	return true
}

// usable reports whether the connection may carry new streams.
func (c *h2conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goAwayRecv && !c.goAwaySent && c.nextID <= math.MaxInt32-2
}

// openStream opens a reserved stream with a CONNECT request for authority
// and extra header fields (name, value pairs, lower-case names).
func (c *h2conn) openStream(authority string, extra ...string) (*stream, error) {
	fields := append([]string{":method", "CONNECT", ":authority", authority}, extra...)
	c.wmu.Lock()
	defer c.unlockWrite()
	c.mu.Lock()
	c.reserved--
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	if c.goAwayRecv {
		c.mu.Unlock()
		return nil, errors.New("hbone: the server is going away")
	}
	id := c.nextID
	c.nextID += 2
	s := c.newStreamLocked(id)
	s.respCh = make(chan struct{})
	c.mu.Unlock()
	if err := c.writeLocked(func() error { return c.writeHeaders(id, false, fields...) }); err != nil {
		return nil, err
	}
	return s, nil
}
