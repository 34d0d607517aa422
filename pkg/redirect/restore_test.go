package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRestoreGolden runs the three decisions (applyScript, removeScript,
// checkProblems) on real iptables-save output (iptables 1.8.9, nf_tables;
// testdata/restore/*.save) and compares them with *.golden.
func TestRestoreGolden(t *testing.T) {
	v4 := Config{Families: []Family{IPv4}, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}
	v6 := Config{Families: []Family{IPv6}, ProbeSourceIPs: []netip.Addr{probeV4, probeV6}}
	cases := []struct {
		name string // testdata/restore/<name>.save and .golden
		cfg  Config
	}{
		{"ipv4-fresh", v4},                // empty netns: everything created
		{"ipv6-fresh", v6},                // same for IPv6
		{"ipv4-installed", v4},            // already correct: no restore at all
		{"ipv6-installed", v6},            // same for IPv6
		{"ipv4-duplicated-jump", v4},      // a bare extra jump and an exact duplicate
		{"ipv4-stale-rule", v4},           // nat AMBIT_OUTPUT: changed port + an extra rule
		{"ipv6-stale-rule-and-jumps", v6}, // extra mangle rule, jump missing, jump with old comment
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Build(tc.cfg)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			in, err := os.ReadFile(filepath.Join("testdata", "restore", tc.name+".save"))
			if err != nil {
				t.Fatal(err)
			}
			s, err := parseSave(string(in))
			if err != nil {
				t.Fatalf("parseSave: %v", err)
			}
			f := tc.cfg.Families[0]
			var b strings.Builder
			script, changes := applyScript(p, f, s)
			fmt.Fprintf(&b, "## applyScript: %d changes\n%s", changes, script)
			script, removed := removeScript(s)
			fmt.Fprintf(&b, "## removeScript: %d removed\n%s", removed, script)
			problems, err := checkProblems(p, f, s, nil)
			if err != nil {
				t.Fatalf("checkProblems: %v", err)
			}
			fmt.Fprintf(&b, "## checkProblems: %d\n", len(problems))
			for _, pr := range problems {
				b.WriteString(pr + "\n")
			}
			got := b.String()

			path := filepath.Join("testdata", "restore", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (run with -update if intended)\n--- got\n%s--- want\n%s", path, got, want)
			}

			// Whatever state we start from, applying the script gives a
			// state that needs no further change and has no problems.
			after := simulateRestore(t, s, applyScriptOnly(p, f, s))
			if script, _ := applyScript(p, f, after); script != "" {
				t.Errorf("after applying the script, another is needed:\n%s", script)
			}
			if problems, err := checkProblems(p, f, after, nil); err != nil || len(problems) != 0 {
				t.Errorf("after applying the script, Check finds %q, %v", problems, err)
			}
			gone := simulateRestore(t, after, removeScriptOnly(after))
			for table, tb := range gone.tables {
				for _, ch := range tb.chains {
					if isOurs(ch) {
						t.Errorf("after remove, %s/%s is left", table, ch)
					}
					for _, args := range tb.rules[ch] {
						if isOurs(ruleTarget(args)) {
							t.Errorf("after remove, %s/%s still jumps to %s", table, ch, ruleTarget(args))
						}
					}
				}
			}
		})
	}
}

func applyScriptOnly(p Plan, f Family, s savedState) string {
	script, _ := applyScript(p, f, s)
	return script
}

func removeScriptOnly(s savedState) string {
	script, _ := removeScript(s)
	return script
}

// simulateRestore applies an iptables-restore --noflush script to a parsed
// state the way iptables does for the commands our scripts use, so the
// table tests can check where a script leads. It fails the test on a
// command iptables would reject (deleting a missing rule, a chain that is
// still referenced, ...).
func simulateRestore(t *testing.T, s savedState, script string) savedState {
	t.Helper()
	out := savedState{tables: map[string]*savedTable{}}
	for name, tb := range s.tables {
		c := &savedTable{chains: slices.Clone(tb.chains), rules: map[string][][]string{}}
		for ch, rules := range tb.rules {
			c.rules[ch] = slices.Clone(rules)
		}
		out.tables[name] = c
	}
	var cur *savedTable
	for _, line := range strings.Split(script, "\n") {
		args, err := tokenize(line)
		if err != nil {
			t.Fatalf("script line %q: %v", line, err)
		}
		switch {
		case len(args) == 0:
		case strings.HasPrefix(line, "*"):
			name := line[1:]
			if out.tables[name] == nil {
				out.tables[name] = &savedTable{chains: []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}, rules: map[string][][]string{}}
			}
			cur = out.tables[name]
		case line == "COMMIT":
			cur = nil
		case strings.HasPrefix(line, ":"):
			if !cur.hasChain(args[0][1:]) {
				cur.chains = append(cur.chains, args[0][1:])
			}
			cur.rules[args[0][1:]] = nil // --noflush flushes a declared chain
		case args[0] == "-A":
			cur.rules[args[1]] = append(cur.rules[args[1]], args[2:])
		case args[0] == "-I" && args[2] == "1":
			cur.rules[args[1]] = slices.Insert(cur.rules[args[1]], 0, args[3:])
		case args[0] == "-D":
			i := slices.IndexFunc(cur.rules[args[1]], func(r []string) bool { return slices.Equal(r, args[2:]) })
			if i < 0 {
				t.Fatalf("script line %q: no such rule", line)
			}
			cur.rules[args[1]] = slices.Delete(cur.rules[args[1]], i, i+1)
		case args[0] == "-F":
			cur.rules[args[1]] = nil
		case args[0] == "-X":
			for _, rules := range cur.rules {
				for _, r := range rules {
					if ruleTarget(r) == args[1] {
						t.Fatalf("script line %q: chain still referenced", line)
					}
				}
			}
			if len(cur.rules[args[1]]) > 0 {
				t.Fatalf("script line %q: chain not empty", line)
			}
			cur.chains = slices.DeleteFunc(cur.chains, func(c string) bool { return c == args[1] })
			delete(cur.rules, args[1])
		default:
			t.Fatalf("script line %q: command not simulated", line)
		}
	}
	return out
}

func TestTokenize(t *testing.T) {
	cases := []struct {
		name string
		line string
		want []string
	}{
		{"plain", "-A OUTPUT -o lo -j RETURN", []string{"-A", "OUTPUT", "-o", "lo", "-j", "RETURN"}},
		{"ipv6 address", "-A P -s fd16::1/128 -j RETURN", []string{"-A", "P", "-s", "fd16::1/128", "-j", "RETURN"}},
		{"quoted comment with escaped apostrophe", `-m comment --comment "ambit: ztunnel\'s x" -j X`,
			[]string{"-m", "comment", "--comment", "ambit: ztunnel's x", "-j", "X"}},
		{"escaped quote and backslash", `--comment "a \"b\" \\c"`, []string{"--comment", `a "b" \c`}},
		{"empty quoted argument", `--comment "" -j X`, []string{"--comment", "", "-j", "X"}},
		{"repeated blanks and tabs", "-A  X\t-j Y ", []string{"-A", "X", "-j", "Y"}},
		{"utf-8 comment", `--comment "café"`, []string{"--comment", "café"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tokenize(tc.line)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("tokenize(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
			}
			// What quoteArgs writes, tokenize (and iptables-restore) reads back.
			if back, err := tokenize(quoteArgs(got)); err != nil || !slices.Equal(back, got) {
				t.Errorf("round trip of %q through %q = %q, %v", got, quoteArgs(got), back, err)
			}
		})
	}
	if _, err := tokenize(`--comment "open`); err == nil {
		t.Error("tokenize accepted an unterminated quote")
	}
}

func TestParseSaveRejects(t *testing.T) {
	cases := []struct {
		name, out, wantErr string
	}{
		{"rule outside table", "-A OUTPUT -j X\n", "outside a table"},
		{"no commit", "*nat\n:OUTPUT ACCEPT [0:0]\n", "no COMMIT"},
		{"unknown line", "*nat\n-N X\nCOMMIT\n", "not understood"},
		{"unterminated quote", "*nat\n-A OUTPUT -m comment --comment \"x -j X\nCOMMIT\n", "unterminated quote"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseSave(tc.out); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseSave error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestCheckProblemsAsksIptables covers Check's fallback: a saved rule that
// reads differently from the plan is drift only if iptables -C says so.
func TestCheckProblemsAsksIptables(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		p, err := Build(Config{Families: []Family{f}})
		if err != nil {
			t.Fatal(err)
		}
		// An installed state in which every rule is printed with an
		// extra "-m tcp" an imaginary iptables version adds.
		installed, _ := applyScript(p, f, savedState{})
		s := simulateRestore(t, savedState{}, strings.ReplaceAll(installed, "-p tcp", "-p tcp -m tcp"))
		cases := []struct {
			name   string
			exists ruleExists
			want   int // problems
		}{
			{"text only", nil, 3}, // the three chains differ; the jumps have no -p tcp
			{"iptables finds them", func(Rule) (bool, error) { return true, nil }, 0},
			{"iptables does not", func(Rule) (bool, error) { return false, nil }, 3},
		}
		for _, tc := range cases {
			t.Run(f.String()+"/"+tc.name, func(t *testing.T) {
				got, err := checkProblems(p, f, s, tc.exists)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != tc.want {
					t.Errorf("problems = %q, want %d", got, tc.want)
				}
				for _, pr := range got {
					if !strings.Contains(pr, "differs from the plan") {
						t.Errorf("unexpected problem %q", pr)
					}
				}
			})
		}
		t.Run(f.String()+"/iptables fails", func(t *testing.T) {
			_, err := checkProblems(p, f, s, func(Rule) (bool, error) { return false, errors.New("exit status 2") })
			if err == nil {
				t.Fatal("checkProblems ignored the error of iptables -C")
			}
		})
	}
}
