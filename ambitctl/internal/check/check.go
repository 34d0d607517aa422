// Package check holds the rules of `ambitctl check`: pre-flight (can Ambit
// be installed on this cluster?) and post-install (is every component up?).
// The rules are pure functions of a snapshot of the cluster that
// internal/kube gathers; every failed rule says what is wrong and how to
// fix it.
package check

import (
	"fmt"
	"strings"
)

// Status of one result.
type Status int

// Statuses, from good to bad.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	default:
		return "FAIL"
	}
}

// Result is the outcome of one rule.
type Result struct {
	Status Status
	// Message says what was found ("ztunnel is not running on node n2").
	Message string
	// Fix says what to do about it; empty for OK results.
	Fix string
}

// Line renders r as one output line: status, message, and the fix after
// a colon.
func (r Result) Line() string {
	line := fmt.Sprintf("%-4s  %s", r.Status, r.Message)
	if r.Fix != "" {
		line += ": " + r.Fix
	}
	return line
}

// Lines renders results, one line each, and a final summary line.
func Lines(results []Result) []string {
	out := make([]string, 0, len(results)+1)
	var warns, fails int
	for _, r := range results {
		out = append(out, r.Line())
		switch r.Status {
		case Warn:
			warns++
		case Fail:
			fails++
		}
	}
	switch {
	case fails > 0:
		out = append(out, fmt.Sprintf("%d check(s) failed, %d warning(s)", fails, warns))
	case warns > 0:
		out = append(out, fmt.Sprintf("all checks passed, %d warning(s)", warns))
	default:
		out = append(out, "all checks passed")
	}
	return out
}

// Failed reports whether any result failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

func ok(format string, a ...any) Result {
	return Result{Status: OK, Message: fmt.Sprintf(format, a...)}
}

func warn(fix, format string, a ...any) Result {
	return Result{Status: Warn, Message: fmt.Sprintf(format, a...), Fix: fix}
}

func fail(fix, format string, a ...any) Result {
	return Result{Status: Fail, Message: fmt.Sprintf(format, a...), Fix: fix}
}

// joinNames lists names for a message: "n1, n2".
func joinNames(names []string) string { return strings.Join(names, ", ") }
