package testreport

import (
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  string
		build int
	}{
		{
			name: "pass fail skip and subtests",
			in: `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"hello\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestB/sub"}
{"Action":"fail","Package":"p","Test":"TestB"}
{"Action":"skip","Package":"p","Test":"TestC"}
{"Action":"fail","Package":"p"}
`,
			want: "2 passed, 1 failed, 1 skipped",
		},
		{
			name:  "package fails without a failing test (build error)",
			in:    "{\"Action\":\"build-output\",\"ImportPath\":\"q\",\"Output\":\"x.go:1: syntax error\\n\"}\n{\"Action\":\"fail\",\"Package\":\"q\"}\n",
			want:  "0 passed, 1 failed, 0 skipped",
			build: 1,
		},
		{
			name: "non-JSON lines are echoed, not counted",
			in:   "go: downloading x\n{\"Action\":\"pass\",\"Package\":\"p\",\"Test\":\"T\"}\n",
			want: "1 passed, 0 failed, 0 skipped",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var echo strings.Builder
			c, err := Read(strings.NewReader(tt.in), &echo)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Line(); got != tt.want {
				t.Errorf("Line() = %q, want %q", got, tt.want)
			}
			if len(c.BuildFailed) != tt.build {
				t.Errorf("BuildFailed = %v, want %d entries", c.BuildFailed, tt.build)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	s := Summary([]string{"unit", "e2e"}, map[string]Counts{
		"unit": {Passed: 3},
		"e2e":  {Passed: 1, Failed: 1, FailedNames: []string{"e2e.TestX"}},
	})
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if last := lines[len(lines)-1]; last != "4 passed, 1 failed, 0 skipped" {
		t.Errorf("closing line = %q", last)
	}
	if !strings.Contains(s, "FAILED: e2e.TestX") {
		t.Errorf("summary does not name the failed test:\n%s", s)
	}
}
