package benchkit

import (
	"fmt"
	"strings"
	"testing"
)

type testCol struct {
	name   string
	failed bool
}

func (c testCol) ColumnName() string { return c.name }
func (c testCol) ColumnFailed() bool { return c.failed }

type testRow string

func (r testRow) RowLabel() string { return string(r) }

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	WriteTable(&b, []testRow{"p99 (ms)", "CPU"}, []testCol{{"direct", false}, {"proxy", false}, {"broken", true}},
		func(r testRow, c testCol) string { return fmt.Sprintf("%s@%s", c.name, r[:3]) })
	want := "| Metric | direct | proxy | broken |\n|---|---|---|---|\n| p99 (ms) | direct@p99 | proxy@p99 | failed |\n| CPU | direct@CPU | proxy@CPU | failed |\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteHeader(t *testing.T) {
	var b strings.Builder
	WriteHeader(&b, " go run ./bench/l7 -quick ", []string{"vCPUs: 2", "nice: -10"})
	want := "Command: `go run ./bench/l7 -quick`\n\n- vCPUs: 2\n- nice: -10\n"
	if b.String() != want {
		t.Errorf("header:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestVerdict(t *testing.T) {
	if Verdict(true) != "MET" || Verdict(false) != "NOT MET" {
		t.Errorf("Verdict(true), Verdict(false) = %q, %q", Verdict(true), Verdict(false))
	}
}
