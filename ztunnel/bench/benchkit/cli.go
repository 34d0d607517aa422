package benchkit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Main is a benchmark program's main: it parses the arguments with parse
// (exit 0 on -h, 2 on a bad flag), logs at warn (info when verbose says
// so) to stderr, and runs until done or SIGINT/SIGTERM (exit 1 on error).
// run gets the command line to print in its report.
func Main[C any](name string, args []string, parse func([]string) (C, error), verbose func(C) bool,
	run func(context.Context, C, *slog.Logger, string) error) int {
	cfg, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	level := slog.LevelWarn
	if verbose(cfg) {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, "go run ./bench/"+name+" "+strings.Join(args, " ")); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// Prepare checks for root (network namespaces), raises RLIMIT_NOFILE
// (returned) and sets the nice value (0: unchanged) that the bench and
// the proxies it starts run at.
func Prepare(nice int) (uint64, error) {
	if os.Geteuid() != 0 {
		return 0, errors.New("the benchmark builds network namespaces and needs root; run it as root")
	}
	fdLimit, err := RaiseNoFile()
	if err != nil {
		return 0, err
	}
	if nice != 0 {
		if err := SetNice(nice); err != nil {
			return 0, fmt.Errorf("%w (pass -nice 0 to leave the priority alone)", err)
		}
	}
	return fdLimit, nil
}

// WriteHeader writes the report's command line and facts as a list.
func WriteHeader(w io.Writer, cmdline string, facts []string) {
	fmt.Fprintf(w, "Command: `%s`\n\n", strings.TrimSpace(cmdline))
	for _, f := range facts {
		fmt.Fprintf(w, "- %s\n", f)
	}
}

// WriteTable writes a markdown table: a header row of "Metric" and the
// column names, then per row its label and one cell per column, from
// cell(row, column); a failed column shows "failed".
func WriteTable(w io.Writer, columns []string, failed []bool, labels []string, cell func(row, col int) string) {
	fmt.Fprintf(w, "| Metric | %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)+1))
	for i, label := range labels {
		cells := []string{label}
		for j := range columns {
			if failed[j] {
				cells = append(cells, "failed")
				continue
			}
			cells = append(cells, cell(i, j))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}
