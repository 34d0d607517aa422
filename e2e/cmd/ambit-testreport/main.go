// Command ambit-testreport turns `go test -json` into readable output and a
// closing count line.
//
//	go test -json ./... | ambit-testreport stream --tier unit --out unit.counts
//	ambit-testreport summary unit.counts privileged.counts e2e.counts
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"ambit.dev/e2e/internal/testreport"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ambit-testreport stream --out FILE | summary FILE...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "stream":
		fs := flag.NewFlagSet("stream", flag.ExitOnError)
		out := fs.String("out", "", "write the counts as JSON to this file")
		_ = fs.Parse(os.Args[2:])
		c, err := testreport.Read(os.Stdin, os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ambit-testreport:", err)
			os.Exit(1)
		}
		fmt.Println(c.Line())
		if *out != "" {
			b, _ := json.Marshal(c)
			if err := os.WriteFile(*out, b, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "ambit-testreport:", err)
				os.Exit(1)
			}
		}
		if c.Failed+len(c.BuildFailed) > 0 {
			os.Exit(1)
		}
	case "summary":
		counts := map[string]testreport.Counts{}
		var tiers []string
		for _, f := range os.Args[2:] {
			tier := strings.TrimSuffix(filepath.Base(f), ".counts")
			tiers = append(tiers, tier)
			b, err := os.ReadFile(f)
			if err != nil {
				// A tier that never reported counts as one failure.
				counts[tier] = testreport.Counts{BuildFailed: []string{tier + " tier did not run to completion"}}
				continue
			}
			var c testreport.Counts
			if err := json.Unmarshal(b, &c); err != nil {
				counts[tier] = testreport.Counts{BuildFailed: []string{tier + " counts unreadable"}}
				continue
			}
			counts[tier] = c
		}
		fmt.Print(testreport.Summary(tiers, counts))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
