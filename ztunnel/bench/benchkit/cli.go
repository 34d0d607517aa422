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

// Column is one column of a report table (a path under test).
type Column interface {
	ColumnName() string
	// ColumnFailed reports that the path could not be measured: its cells
	// show "failed".
	ColumnFailed() bool
}

// Row is one metric of a report table.
type Row interface{ RowLabel() string }

// WriteTable writes a markdown table: a header of "Metric" and the column
// names, then per row its label and cell(row, column) for each column.
func WriteTable[R Row, C Column](w io.Writer, rows []R, cols []C, cell func(R, C) string) {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.ColumnName()
	}
	fmt.Fprintf(w, "| Metric | %s |\n|%s\n", strings.Join(names, " | "), strings.Repeat("---|", len(cols)+1))
	for _, r := range rows {
		cells := []string{r.RowLabel()}
		for _, c := range cols {
			if c.ColumnFailed() {
				cells = append(cells, "failed")
				continue
			}
			cells = append(cells, cell(r, c))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

// Verdict is how a report states a target: MET or NOT MET.
func Verdict(met bool) string {
	if met {
		return "MET"
	}
	return "NOT MET"
}
