package flagenv

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestEnvName(t *testing.T) {
	if got := EnvName("cni-add-timeout"); got != "AMBIT_CNI_ADD_TIMEOUT" {
		t.Fatalf("EnvName = %q", got)
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		env      map[string]string
		wantNode string
		wantWait time.Duration
		wantErr  string
	}{
		{name: "defaults", wantNode: "", wantWait: time.Second},
		{name: "env fills what the command line leaves", env: map[string]string{"AMBIT_NODE_NAME": "n7", "AMBIT_WAIT": "5s"}, wantNode: "n7", wantWait: 5 * time.Second},
		{name: "command line wins", args: []string{"--node-name=n1"}, env: map[string]string{"AMBIT_NODE_NAME": "other"}, wantNode: "n1", wantWait: time.Second},
		{name: "bad env value names the variable", env: map[string]string{"AMBIT_WAIT": "soon"}, wantErr: "AMBIT_WAIT"},
		{name: "positional argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			node := fs.String("node-name", "", "")
			wait := fs.Duration("wait", time.Second, "")
			err := Parse(fs, tc.args, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || *node != tc.wantNode || *wait != tc.wantWait {
				t.Fatalf("Parse = %v: node %q wait %v; want %q %v", err, *node, *wait, tc.wantNode, tc.wantWait)
			}
		})
	}
}

func TestParseHelp(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := Parse(fs, []string{"-h"}, nil); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
}
