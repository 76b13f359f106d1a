// Package readmetest holds the tests that keep the README true: its Go
// snippets (and those of docs/*.md) compile as shown, and its shell lines
// (hubctl, devsim, curl) and Go snippets succeed against what `make run`
// starts.
//
// Markers in the markdown, on the line before a fenced block:
//
//	<!-- not a snippet -->          a ```go block not meant to compile
//	<!-- not against make run -->   a ```sh or ```go block not meant to
//	                                run against the demo
//
// and, in a shell line's trailing comment, "until Ctrl-C" for a command
// that runs until interrupted (hubctl tail): it must still be running,
// with output, when the test interrupts it.
package readmetest
