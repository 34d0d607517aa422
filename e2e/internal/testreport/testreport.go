// Package testreport reads `go test -json` (test2json) streams: it echoes
// the human-readable output while tests run and counts results per tier so
// CI can print one closing line.
package testreport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Event is one test2json record.
type Event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// Counts are test results; subtests count like tests.
type Counts struct {
	Passed, Failed, Skipped int
	// FailedNames lists failed tests as package.Test.
	FailedNames []string
	// BuildFailed lists packages that failed without a failing test
	// (build errors, panics in init, timeouts).
	BuildFailed []string
}

// Add merges o into c.
func (c *Counts) Add(o Counts) {
	c.Passed += o.Passed
	c.Failed += o.Failed
	c.Skipped += o.Skipped
	c.FailedNames = append(c.FailedNames, o.FailedNames...)
	c.BuildFailed = append(c.BuildFailed, o.BuildFailed...)
}

// Line is the closing line CI reads.
func (c Counts) Line() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", c.Passed, c.Failed+len(c.BuildFailed), c.Skipped)
}

// Read consumes a test2json stream, writing test output to echo (may be nil)
// and returning the counts. Lines that are not JSON (e.g. build errors on
// older toolchains) are echoed as they are.
func Read(r io.Reader, echo io.Writer) (Counts, error) {
	var c Counts
	pkgFailedTests := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var ev Event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			if echo != nil {
				fmt.Fprintf(echo, "%s\n", line)
			}
			continue
		}
		switch ev.Action {
		case "output", "build-output":
			if echo != nil {
				io.WriteString(echo, ev.Output)
			}
		case "pass":
			if ev.Test != "" {
				c.Passed++
			}
		case "skip":
			if ev.Test != "" {
				c.Skipped++
			}
		case "fail":
			if ev.Test != "" {
				c.Failed++
				c.FailedNames = append(c.FailedNames, ev.Package+"."+ev.Test)
				pkgFailedTests[ev.Package] = true
			} else if !pkgFailedTests[ev.Package] && ev.Package != "" {
				c.BuildFailed = append(c.BuildFailed, ev.Package)
			}
		}
	}
	sort.Strings(c.FailedNames)
	return c, sc.Err()
}

// Summary renders per-tier lines, the failed tests and the closing line.
func Summary(tiers []string, counts map[string]Counts) string {
	var b strings.Builder
	var total Counts
	for _, t := range tiers {
		c := counts[t]
		fmt.Fprintf(&b, "tier %-11s %s\n", t+":", c.Line())
		total.Add(c)
	}
	for _, n := range total.FailedNames {
		fmt.Fprintf(&b, "FAILED: %s\n", n)
	}
	for _, p := range total.BuildFailed {
		fmt.Fprintf(&b, "FAILED (package did not build or crashed): %s\n", p)
	}
	b.WriteString(total.Line() + "\n")
	return b.String()
}
