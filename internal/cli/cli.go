// Package cli holds what the binaries share: flags that may also come from
// HUB_* environment variables and may stand before or after arguments.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvName is the environment variable of a flag: --nats-url is HUB_NATS_URL.
func EnvName(flagName string) string {
	return "HUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag of fs that has an environment variable, before
// the command line is parsed, so that the command line wins.
func ApplyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		if v, ok := lookup(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
			}
		}
	})
	return err
}

// Parse parses args with flags allowed before, between and after the
// positional arguments, and returns the positional ones. "--" ends flags.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// ParseFlags sets fs from the environment (lookup) and then from args, for
// a command that takes flags only. It says what is wrong on stderr, as
// "prog: ...", and returns false with the exit code when the command
// should end there: 0 after -h, 2 for a bad flag, value or argument.
func ParseFlags(prog string, fs *flag.FlagSet, args []string, lookup func(string) (string, bool), stderr io.Writer) (exit int, ok bool) {
	if err := ApplyEnv(fs, lookup); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2, false
	}
	rest, err := Parse(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	case err != nil:
		return 2, false // the flag package has said why
	case len(rest) > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", prog, rest[0])
		return 2, false
	}
	return 0, true
}

// Env is os.LookupEnv, for ApplyEnv.
func Env(name string) (string, bool) { return os.LookupEnv(name) }
