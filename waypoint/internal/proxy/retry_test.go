package proxy

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"ambit.dev/waypoint/internal/model"
)

func readAll(t *testing.T, r io.Reader) (string, error) {
	t.Helper()
	b, err := io.ReadAll(r)
	return string(b), err
}

func TestReplayBody(t *testing.T) {
	t.Run("replayed within the limit", func(t *testing.T) {
		b := &replayBody{src: strings.NewReader("hello"), limit: 5}
		var eofs atomic.Int32
		r1 := b.reader(func() { eofs.Add(1) })
		if b.complete() {
			t.Fatal("complete before it was read")
		}
		if got, err := readAll(t, r1); got != "hello" || err != nil {
			t.Fatalf("first read %q, %v", got, err)
		}
		r1.Read(make([]byte, 1)) // EOF again: onEOF still once
		if !b.replayable() || !b.complete() || eofs.Load() != 1 {
			t.Fatalf("replayable %v, complete %v, %d EOFs", b.replayable(), b.complete(), eofs.Load())
		}
		r2 := b.reader(nil)
		if _, err := r1.Read(make([]byte, 1)); !errors.Is(err, errBodyAbandoned) {
			t.Fatalf("abandoned reader read: %v", err)
		}
		if got, err := readAll(t, r2); got != "hello" || err != nil {
			t.Fatalf("replay %q, %v", got, err)
		}
	})
	t.Run("beyond the limit: streamed, not replayable", func(t *testing.T) {
		b := &replayBody{src: strings.NewReader("hello!"), limit: 5}
		if got, err := readAll(t, b.reader(nil)); got != "hello!" || err != nil {
			t.Fatalf("first read %q, %v", got, err)
		}
		if b.replayable() || b.complete() {
			t.Fatal("a body over the limit is replayable")
		}
		if _, err := readAll(t, b.reader(nil)); !errors.Is(err, errBodyNotKept) {
			t.Fatalf("replay over the limit: %v", err)
		}
	})
	t.Run("retry while the body still streams", func(t *testing.T) {
		pr, pw := io.Pipe()
		b := &replayBody{src: pr, limit: 100}
		r1 := b.reader(nil)
		go pw.Write([]byte("abc"))
		p := make([]byte, 10)
		if n, err := r1.Read(p); string(p[:n]) != "abc" || err != nil {
			t.Fatalf("first read %q, %v", p[:n], err)
		}
		// r1 is blocked in the source when the retry starts: what it
		// pulls is kept for r2.
		res := make(chan error, 1)
		go func() {
			_, err := r1.Read(p)
			res <- err
		}()
		r2 := b.reader(nil)
		go func() {
			pw.Write([]byte("def"))
			pw.Close()
		}()
		if got, err := readAll(t, r2); got != "abcdef" || err != nil {
			t.Fatalf("replay %q, %v", got, err)
		}
		if err := <-res; !errors.Is(err, errBodyAbandoned) {
			t.Fatalf("abandoned reader: %v", err)
		}
	})
	t.Run("source error is sticky", func(t *testing.T) {
		boom := errors.New("client reset")
		b := &replayBody{src: io.MultiReader(strings.NewReader("ab"), errReader{boom}), limit: 10}
		if got, err := readAll(t, b.reader(nil)); got != "ab" || !errors.Is(err, boom) {
			t.Fatalf("read %q, %v", got, err)
		}
		if got, err := readAll(t, b.reader(nil)); got != "ab" || !errors.Is(err, boom) {
			t.Fatalf("replay %q, %v", got, err)
		}
	})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestFailureOf(t *testing.T) {
	tests := []struct {
		err  error
		want model.Failure
	}{
		{&connectError{errors.New("dial tcp 10.244.1.5:15008: connection refused")}, model.FailureConnect},
		{fmt.Errorf("wrapped: %w", &connectError{errors.New("x")}), model.FailureConnect},
		{errors.New("stream error: stream ID 3; REFUSED_STREAM"), model.FailureRefusedStream},
		{io.ErrUnexpectedEOF, model.FailureReset},
		{errors.New("http2: server sent GOAWAY and closed the connection"), model.FailureReset},
	}
	for _, tt := range tests {
		if got := failureOf(tt.err); got != tt.want {
			t.Errorf("failureOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestAcquireRetry(t *testing.T) {
	var s clusterState
	budget := &model.RetryBudget{Percent: 20, MinConcurrency: 2}
	s.requests.Store(10)
	for i := range 2 {
		if !s.acquireRetry(budget) {
			t.Fatalf("retry %d refused with 10 requests in flight (max 2)", i)
		}
	}
	if s.acquireRetry(budget) {
		t.Fatal("third retry allowed")
	}
	s.requests.Store(15) // 20% of 15 = 3
	if !s.acquireRetry(budget) || s.acquireRetry(budget) {
		t.Fatal("with 15 requests, exactly one more retry")
	}
	var none clusterState // no budget: Envoy's max_retries 3
	for range 3 {
		if !none.acquireRetry(nil) {
			t.Fatal("default threshold refused")
		}
	}
	if none.acquireRetry(nil) {
		t.Fatal("default threshold allowed a fourth retry")
	}
}
