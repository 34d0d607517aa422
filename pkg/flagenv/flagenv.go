// Package flagenv parses a binary's --flags with AMBIT_* environment
// variables as fallback, the one convention every Ambit binary that reads
// its environment follows: --node-name ↔ AMBIT_NODE_NAME, and the command
// line wins over the environment.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Prefix starts the environment variable of every flag.
const Prefix = "AMBIT_"

// EnvName returns the environment variable that sets flag name.
func EnvName(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs. A flag not given on the command line takes its
// value from EnvName(flag) when lookupEnv (may be nil) finds it, else keeps
// its default. Positional arguments are an error. An error of fs.Parse
// (flag.ErrHelp included) is returned as is.
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (all settings are --flags)", fs.Args())
	}
	if lookupEnv == nil {
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}
