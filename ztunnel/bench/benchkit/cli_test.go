package benchkit

import (
	"fmt"
	"strings"
	"testing"
)

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	WriteTable(&b, []string{"direct", "proxy", "broken"}, []bool{false, false, true}, []string{"p99 (ms)", "CPU"},
		func(row, col int) string { return fmt.Sprintf("r%dc%d", row, col) })
	want := "| Metric | direct | proxy | broken |\n|---|---|---|---|\n| p99 (ms) | r0c0 | r0c1 | failed |\n| CPU | r1c0 | r1c1 | failed |\n"
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
