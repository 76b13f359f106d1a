package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// usageError marks a mistake in the command line: exit status 2, so a
// script can tell "you called me wrong" from "the system said no".
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// deviceError is a failed command as the protocol reports it: the code and
// message of the device's (or the holding node's) reply, or the 503 and 408
// hubctl concludes itself. It prints as "CODE MSG" with no "hubctl:"
// prefix, so that a script can read the code as the first field, the same
// code an admin sees for /admin/command.
type deviceError struct {
	code int
	msg  string
}

func (e *deviceError) Error() string {
	if e.msg == "" {
		return strconv.Itoa(e.code)
	}
	return strconv.Itoa(e.code) + " " + e.msg
}

// fail reports err on stderr as exactly one line and returns the exit
// status for it.
func fail(stderr io.Writer, err error) int {
	var de *deviceError
	if errors.As(err, &de) {
		fmt.Fprintln(stderr, oneLine(de.Error()))
		return 1
	}
	fmt.Fprintln(stderr, "hubctl: "+oneLine(err.Error()))
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// oneLine folds a multi-line message (errors.Join, a device's msg) into one
// line, because callers parse stderr line by line.
func oneLine(s string) string { return lineBreaks.Replace(strings.TrimSpace(s)) }

var lineBreaks = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ")
