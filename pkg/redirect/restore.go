package redirect

import (
	"fmt"
	"slices"
	"strings"
)

// This file holds the pure half of the installer: parsing what
// iptables-save prints for one IP family, and deciding from it and a Plan
// the iptables-restore --noflush script that Apply or Remove feed in (one
// per family), or the problems Check reports. The Linux installer only runs
// the two programs around these functions.
//
// Rules are compared as argument lists: iptables-save prints a rule the way
// it was given for everything the plan uses (iptables 1.8.9, nf_tables and
// legacy), except for quoting, which tokenize undoes.

// savedState is the parsed iptables-save output of one family: per table,
// its chains in order and their rules.
type savedState struct {
	tables map[string]*savedTable
}

// savedTable is one "*table ... COMMIT" section of iptables-save output.
type savedTable struct {
	// chains are the chain names in the order they are declared.
	chains []string
	// rules holds each chain's rules, in order, as the arguments that
	// follow "-A CHAIN".
	rules map[string][][]string
}

// table returns the named table, empty when the save did not list it (a
// netns where it was never used).
func (s savedState) table(name string) *savedTable {
	if t, ok := s.tables[name]; ok {
		return t
	}
	return &savedTable{rules: map[string][][]string{}}
}

func (t *savedTable) hasChain(name string) bool { return slices.Contains(t.chains, name) }

// parseSave parses iptables-save (or ip6tables-save) output.
func parseSave(out string) (savedState, error) {
	s := savedState{tables: map[string]*savedTable{}}
	var cur *savedTable
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			name := line[1:]
			cur = &savedTable{rules: map[string][][]string{}}
			s.tables[name] = cur
		case cur == nil:
			return savedState{}, fmt.Errorf("iptables-save line %d outside a table: %q", i+1, line)
		case line == "COMMIT":
			cur = nil
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			cur.chains = append(cur.chains, name)
		case strings.HasPrefix(line, "-A "):
			args, err := tokenize(line)
			if err != nil {
				return savedState{}, fmt.Errorf("iptables-save line %d: %w", i+1, err)
			}
			if len(args) < 2 {
				return savedState{}, fmt.Errorf("iptables-save line %d: rule without chain: %q", i+1, line)
			}
			cur.rules[args[1]] = append(cur.rules[args[1]], args[2:])
		default:
			return savedState{}, fmt.Errorf("iptables-save line %d not understood: %q", i+1, line)
		}
	}
	if cur != nil {
		return savedState{}, fmt.Errorf("iptables-save output ends inside a table (no COMMIT)")
	}
	return s, nil
}

// tokenize splits a rule line into arguments the way iptables-restore does:
// on blanks, except inside double quotes, where a backslash escapes the
// next character (iptables-save writes \" \\ and \').
func tokenize(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inArg   bool
		quoted  bool
		escaped bool
	)
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quoted && r == '\\':
			escaped = true
		case r == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (r == ' ' || r == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if quoted || escaped {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// quoteArg quotes an argument for an iptables-restore line when it needs it,
// escaping as iptables-save does.
func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\"'\\") {
		return a
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range a {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = quoteArg(a)
	}
	return strings.Join(out, " ")
}

// ruleTarget returns the chain or target a rule's arguments jump (-j) or go
// (-g) to.
func ruleTarget(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-j" || args[i] == "-g" {
			return args[i+1]
		}
	}
	return ""
}

// jumpsTo returns the rules of a built-in chain that lead to target.
func jumpsTo(t *savedTable, chain, target string) [][]string {
	var out [][]string
	for _, args := range t.rules[chain] {
		if ruleTarget(args) == target {
			out = append(out, args)
		}
	}
	return out
}

// chainHolds reports whether the saved chain holds exactly want, in order.
func chainHolds(t *savedTable, chain string, want []Rule) bool {
	got := t.rules[chain]
	if len(got) != len(want) {
		return false
	}
	for i, r := range want {
		if !slices.Equal(got[i], r.Spec()) {
			return false
		}
	}
	return true
}

// tablesOf returns the tables family f's plan uses, in plan order.
func tablesOf(p Plan, f Family) []string {
	var out []string
	for _, ch := range p.Chains {
		if ch.Family == f && !slices.Contains(out, ch.Table) {
			out = append(out, ch.Table)
		}
	}
	return out
}

// applyScript decides how to bring family f of a netns, whose iptables-save
// output parsed to s, to the plan: the iptables-restore --noflush input, and
// the number of chains rewritten and jumps replaced. It returns "" when
// everything is already in place.
//
// A chain that differs from the plan (or is missing) is declared, which
// under --noflush creates or flushes it, and refilled with the planned
// rules. A jump is kept when it is the only rule of its built-in chain
// leading to our chain and is exactly the planned one; otherwise every rule
// leading there is deleted and the planned jump inserted first. Each table
// is committed as a whole, so no packet sees a half-written chain.
func applyScript(p Plan, f Family, s savedState) (script string, changes int) {
	var b strings.Builder
	for _, table := range tablesOf(p, f) {
		t := s.table(table)
		var decl, dels, inss, adds []string
		for _, ch := range p.Chains {
			if ch.Family != f || ch.Table != table {
				continue
			}
			want := rulesOf(p.Rules, f, table, ch.Name)
			if t.hasChain(ch.Name) && chainHolds(t, ch.Name, want) {
				continue
			}
			changes++
			decl = append(decl, fmt.Sprintf(":%s - [0:0]", ch.Name))
			for _, r := range want {
				adds = append(adds, fmt.Sprintf("-A %s %s", r.Chain, quoteArgs(r.Spec())))
			}
		}
		for _, j := range p.Jumps {
			if j.Family != f || j.Table != table {
				continue
			}
			found := jumpsTo(t, j.Chain, jumpTarget(j))
			if len(found) == 1 && slices.Equal(found[0], j.Spec()) {
				continue
			}
			changes++
			for _, args := range found {
				dels = append(dels, fmt.Sprintf("-D %s %s", j.Chain, quoteArgs(args)))
			}
			inss = append(inss, fmt.Sprintf("-I %s 1 %s", j.Chain, quoteArgs(j.Spec())))
		}
		if len(decl)+len(dels)+len(inss) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", table)
		for _, l := range slices.Concat(decl, dels, inss, adds) {
			b.WriteString(l + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String(), changes
}

// removeScript decides how to remove everything Ambit installed in a netns
// whose iptables-save output (one family) parsed to s: every rule of a
// non-Ambit chain of the mangle and nat tables that leads to an AMBIT_*
// chain, then every AMBIT_* chain (flushed, then deleted). It returns the
// iptables-restore --noflush input, "" when there is nothing to remove, and
// how many rules and chains it deletes.
func removeScript(s savedState) (script string, removed int) {
	var b strings.Builder
	for _, table := range []string{TableMangle, TableNat} {
		t := s.table(table)
		var dels, ours []string
		for _, ch := range t.chains {
			if isOurs(ch) {
				ours = append(ours, ch)
				continue
			}
			for _, args := range t.rules[ch] {
				if isOurs(ruleTarget(args)) {
					dels = append(dels, fmt.Sprintf("-D %s %s", ch, quoteArgs(args)))
				}
			}
		}
		if len(dels)+len(ours) == 0 {
			continue
		}
		removed += len(dels) + len(ours)
		fmt.Fprintf(&b, "*%s\n", table)
		for _, l := range dels {
			b.WriteString(l + "\n")
		}
		// Flush all before deleting any: one of our chains may jump to
		// another.
		for _, ch := range ours {
			fmt.Fprintf(&b, "-F %s\n", ch)
		}
		for _, ch := range ours {
			fmt.Fprintf(&b, "-X %s\n", ch)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String(), removed
}

func isOurs(chain string) bool { return strings.HasPrefix(chain, "AMBIT_") }

// ruleExists asks iptables itself whether a rule is present (iptables -C):
// the fallback when a saved rule does not read exactly as planned, in case
// an iptables version prints it differently from how it was written.
type ruleExists func(r Rule) (bool, error)

// checkProblems compares family f of a netns, whose iptables-save output
// parsed to s, with the plan and lists what is missing or differs, one line
// each (empty when everything is in place). When exists is not nil, a chain
// or jump whose saved text differs from the plan is confirmed with it before
// it is reported, so only real drift is.
func checkProblems(p Plan, f Family, s savedState, exists ruleExists) ([]string, error) {
	var problems []string
	missingChain := map[string]bool{}
	for _, ch := range p.Chains {
		if ch.Family != f {
			continue
		}
		t := s.table(ch.Table)
		if !t.hasChain(ch.Name) {
			problems = append(problems, fmt.Sprintf("%v: chain %s/%s missing", f, ch.Table, ch.Name))
			missingChain[ch.Table+"/"+ch.Name] = true
			continue
		}
		want := rulesOf(p.Rules, f, ch.Table, ch.Name)
		same := chainHolds(t, ch.Name, want)
		if !same && exists != nil && len(t.rules[ch.Name]) == len(want) {
			var err error
			if same, err = allExist(exists, want); err != nil {
				return nil, err
			}
		}
		if !same {
			problems = append(problems, fmt.Sprintf("%v: chain %s/%s differs from the plan", f, ch.Table, ch.Name))
		}
	}
	for _, j := range p.Jumps {
		if j.Family != f {
			continue
		}
		missing := fmt.Sprintf("%v: jump %s/%s -> %s missing", f, j.Table, j.Chain, jumpTarget(j))
		if missingChain[j.Table+"/"+jumpTarget(j)] {
			problems = append(problems, missing)
			continue
		}
		found := jumpsTo(s.table(j.Table), j.Chain, jumpTarget(j))
		exact := slices.ContainsFunc(found, func(args []string) bool { return slices.Equal(args, j.Spec()) })
		if !exact && len(found) > 0 && exists != nil {
			var err error
			if exact, err = exists(j); err != nil {
				return nil, err
			}
		}
		switch {
		case len(found) == 0 || !exact:
			problems = append(problems, missing)
		case len(found) > 1:
			problems = append(problems, fmt.Sprintf("%v: %d jumps %s/%s -> %s, want 1", f, len(found), j.Table, j.Chain, jumpTarget(j)))
		}
	}
	return problems, nil
}

func allExist(exists ruleExists, rules []Rule) (bool, error) {
	for _, r := range rules {
		ok, err := exists(r)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}
