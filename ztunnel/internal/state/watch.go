package state

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// DefaultPollInterval is how often FileWatcher checks the file.
const DefaultPollInterval = time.Second

// FileWatcher loads the workloads file into a Store and reloads it when its
// content changes. A file that fails to parse or validate leaves the last
// good snapshot in place; the reason is logged and kept for LastError.
type FileWatcher struct {
	path     string
	td       string
	store    *Store
	log      *slog.Logger
	interval time.Duration

	last    []byte // content of the last good load
	lastErr atomicError
}

// NewFileWatcher returns a watcher of path feeding store. trustDomain is
// the default for workloads that name none; interval 0 means
// DefaultPollInterval.
func NewFileWatcher(path, trustDomain string, store *Store, log *slog.Logger, interval time.Duration) *FileWatcher {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	return &FileWatcher{path: path, td: trustDomain, store: store, log: log.With("component", "state", "file", path), interval: interval}
}

// Load reads the file once and stores its snapshot. ztunnel calls it before
// Run so that a bad file at start-up is a start-up error.
func (fw *FileWatcher) Load() error {
	_, err := fw.reload()
	return err
}

// LastError returns why the most recent load failed, or nil if it
// succeeded.
func (fw *FileWatcher) LastError() error { return fw.lastErr.Load() }

// Run polls the file until ctx is done, reloading it when its content
// changed. It returns nil when ctx is done.
func (fw *FileWatcher) Run(ctx context.Context) error {
	t := time.NewTicker(fw.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		changed, err := fw.reload()
		switch {
		case err != nil && changed:
			fw.log.Error("workloads file rejected; keeping the last good state", "error", err)
		case changed:
			snap := fw.store.Current()
			fw.log.Info("workloads file reloaded", "workloads", len(snap.Workloads()), "services", len(snap.Services()))
		}
	}
}

// reload loads the file if its content differs from the last attempt.
// changed reports whether anything new was read (a new good state, or a
// new error).
func (fw *FileWatcher) reload() (changed bool, err error) {
	data, err := os.ReadFile(fw.path)
	if err != nil {
		err = fmt.Errorf("read workloads file: %w (does --workloads-file point at a readable file?)", err)
		return fw.fail(err), err
	}
	if fw.last != nil && bytes.Equal(data, fw.last) {
		if prev := fw.lastErr.Load(); prev != nil {
			// The file went back to the last good content.
			fw.lastErr.Store(nil)
			return true, nil
		}
		return false, nil
	}
	snap, err := Parse(data, fw.td)
	if err != nil {
		err = fmt.Errorf("workloads file %s: %w", fw.path, err)
		return fw.fail(err), err
	}
	fw.last = data
	fw.lastErr.Store(nil)
	fw.store.Replace(snap)
	return true, nil
}

// fail records err and reports whether it differs from the previous one
// (so a broken file is logged once, not every second).
func (fw *FileWatcher) fail(err error) bool {
	prev := fw.lastErr.Load()
	fw.lastErr.Store(err)
	return prev == nil || prev.Error() != err.Error()
}
