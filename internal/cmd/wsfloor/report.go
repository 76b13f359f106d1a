package main

import (
	"io"
)

func writeReport(w io.Writer, dir string) error { return nil }
