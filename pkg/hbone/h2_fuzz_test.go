package hbone

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzServerFrames feeds arbitrary frames, after a valid SETTINGS, to the
// server side of an HTTP/2 connection: it must never panic or hang, only
// answer or hang up.
func FuzzServerFrames(f *testing.F) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.1:80"})
	seed := func(write func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		write(http2.NewFramer(&b, nil))
		return b.Bytes()
	}
	f.Add(seed(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
		fr.WriteData(1, true, []byte("hello"))
	}))
	f.Add(seed(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes()[:3]})
		fr.WriteContinuation(1, true, hb.Bytes()[3:])
		fr.WriteWindowUpdate(1, 100)
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WritePing(false, [8]byte{})
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	f.Add([]byte{0, 0, 1, 0, 0x8, 0, 0, 0, 1, 0xff}) // padded DATA with a bad pad length
	f.Fuzz(func(t *testing.T, frames []byte) {
		client, server := net.Pipe()
		defer client.Close()
		go io.Copy(io.Discard, client) // the server's answers
		c := newH2conn(server, h2Config{
			server: true, streamWindow: 65535, connWindow: 65535, maxReadFrame: 16384, maxStreams: 10,
			log: quietLogger(),
			onRequest: func(st *stream, f *http2.MetaHeadersFrame) {
				go func() {
					st.respondError(400, "fuzz")
					st.closeStream(http2.ErrCodeCancel)
				}()
			},
		})
		c.onIdle = func() { c.fail(io.EOF) }
		go func() {
			var b bytes.Buffer
			http2.NewFramer(&b, nil).WriteSettings()
			client.Write(b.Bytes())
			client.Write(frames)
			time.Sleep(10 * time.Millisecond)
			client.Close()
		}()
		_ = c.start()
		done := make(chan struct{})
		go func() { c.readLoop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the reader did not stop after the client hung up")
		}
		c.fail(io.EOF)
	})
}
