// Package zds is the transport of the ZDS protocol between the node agent
// and ztunnel (api/proto/ambit/zds/v1alpha1/zds.proto): one protobuf message
// per SOCK_SEQPACKET datagram, netns file descriptors as SCM_RIGHTS. It
// frames and checks messages; the exchange itself (replay, snapshot, acks in
// order) belongs to the two peers.
package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
)

// MaxMessage bounds one datagram (see the proto).
const MaxMessage = 4096

// maxFDs is the most descriptors a receiver accepts in one datagram; more
// sets MSG_CTRUNC and is a protocol error.
const maxFDs = 4

// Conn is one ZDS connection.
type Conn struct {
	c *net.UnixConn
}

// Dial connects to the node agent's socket (ztunnel's side).
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("connect to the node agent's ZDS socket %s (is ambit-node-agent running on this node?): %w", path, err)
	}
	return &Conn{c: c.(*net.UnixConn)}, nil
}

// Listener accepts ztunnel connections (the node agent's side).
type Listener struct {
	l *net.UnixListener
}

// Listen listens on path, replacing a socket file left by an earlier run.
func Listen(path string) (*Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("ZDS socket path %s exists and is not a socket; remove it or pick another path", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale ZDS socket %s: %w", path, err)
		}
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen on ZDS socket %s: %w", path, err)
	}
	return &Listener{l: l}, nil
}

// Accept waits for the next ztunnel.
func (l *Listener) Accept() (*Conn, error) {
	c, err := l.l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

// Close stops listening and removes the socket file.
func (l *Listener) Close() error { return l.l.Close() }

// Addr is the socket path.
func (l *Listener) Addr() net.Addr { return l.l.Addr() }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// UnixConn exposes the socket, for deadlines and peer credentials.
func (c *Conn) UnixConn() *net.UnixConn { return c.c }

// SendHello sends ztunnel's hello (V1).
func (c *Conn) SendHello() error {
	return c.send(&zdsv1alpha1.ZdsHello{Version: zdsv1alpha1.Version_V1}, nil)
}

// RecvHello reads the hello and checks it is V1.
func (c *Conn) RecvHello() error {
	var h zdsv1alpha1.ZdsHello
	fds, err := c.recv(&h)
	closeAll(fds)
	if err != nil {
		return fmt.Errorf("reading ZDS hello: %w", err)
	}
	if len(fds) != 0 {
		return errors.New("ZDS hello carried file descriptors")
	}
	if h.GetVersion() != zdsv1alpha1.Version_V1 {
		return fmt.Errorf("ZDS hello with version %v; this node agent speaks %v (upgrade the older of ztunnel and the node agent)", h.GetVersion(), zdsv1alpha1.Version_V1)
	}
	return nil
}

// SendRequest sends one request, with netns attached when it is not nil
// (an AddWorkload); the caller keeps ownership of netns.
func (c *Conn) SendRequest(req *zdsv1alpha1.WorkloadRequest, netns *os.File) error {
	return c.send(req, netns)
}

// RecvRequest reads one request and the descriptors it carried; the caller
// owns (and must close) every returned file, also when err is not nil.
func (c *Conn) RecvRequest() (*zdsv1alpha1.WorkloadRequest, []*os.File, error) {
	req := &zdsv1alpha1.WorkloadRequest{}
	fds, err := c.recv(req)
	if err != nil {
		return nil, fds, err
	}
	return req, fds, nil
}

// SendAck answers the last request: errMsg empty is success, else a nack.
func (c *Conn) SendAck(errMsg string) error {
	return c.send(&zdsv1alpha1.WorkloadResponse{Payload: &zdsv1alpha1.WorkloadResponse_Ack{Ack: &zdsv1alpha1.Ack{Error: errMsg}}}, nil)
}

// RecvAck reads the answer to the last request: nack is the peer's error
// string (empty for an ack); err is a transport or protocol error.
func (c *Conn) RecvAck() (nack string, err error) {
	var resp zdsv1alpha1.WorkloadResponse
	fds, err := c.recv(&resp)
	closeAll(fds)
	if err != nil {
		return "", err
	}
	if len(fds) != 0 {
		return "", errors.New("ZDS response carried file descriptors")
	}
	ack := resp.GetAck()
	if ack == nil {
		return "", errors.New("ZDS response without an ack")
	}
	return ack.GetError(), nil
}

func (c *Conn) send(m proto.Message, f *os.File) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("ZDS message of %d bytes exceeds %d", len(b), MaxMessage)
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	n, oobn, err := c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("ZDS send: %w", err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("ZDS send: short write (%d of %d bytes)", n, len(b))
	}
	return nil
}

func (c *Conn) recv(m proto.Message) ([]*os.File, error) {
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	var files []*os.File
	if oobn > 0 {
		var perr error
		files, perr = parseRights(oob[:oobn])
		if perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		// A zero-length read is reported as io.EOF: the peer closed the
		// connection (so a request must never be an empty datagram).
		return files, err
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return files, fmt.Errorf("ZDS datagram truncated (more than %d bytes or %d descriptors)", MaxMessage, maxFDs)
	}
	if err := proto.Unmarshal(buf[:n], m); err != nil {
		return files, fmt.Errorf("ZDS datagram does not decode as %T: %w", m, err)
	}
	return files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("ZDS ancillary data: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("zds-fd-%d", fd)))
		}
	}
	return files, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
