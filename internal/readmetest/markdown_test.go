package readmetest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Markers, on the line before a fenced block.
const (
	markNotSnippet = "<!-- not a snippet -->"
	markNotDemo    = "<!-- not against make run -->"
	// markEndless, in a shell line's trailing comment, says the command
	// runs until interrupted.
	markEndless = "until Ctrl-C"
)

// notDemoSections are the README's sections whose shell blocks describe
// another setup than `make run` (a production deployment: certificates,
// nkeys and files under /etc), as if each block were marked markNotDemo.
var notDemoSections = map[string]bool{"Running in production": true}

// block is a fenced code block of a markdown file.
type block struct {
	file    string   // relative to the module root
	section string   // the ## heading above it ("" before the first)
	lang    string   // the fence's info string: go, sh, json...
	line    int      // the line number of its first content line
	lines   []string // its content, without the fence's indentation
	marker  string   // the HTML comment on the line before the fence
}

// moduleRoot is the directory holding go.mod, above the test's own.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// blocks returns the fenced blocks of the markdown file rel (relative to
// root), in order.
func blocks(t *testing.T, root, rel string) []block {
	t.Helper()
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out     []block
		cur     *block
		indent  int
		section string
		prev    string // the last non-blank line outside a block
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if cur != nil {
			if trimmed == "```" {
				out = append(out, *cur)
				cur = nil
				continue
			}
			// Remove the fence's indentation (a block in a list item).
			i := 0
			for i < indent && i < len(line) && line[i] == ' ' {
				i++
			}
			cur.lines = append(cur.lines, line[i:])
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			indent = len(line) - len(strings.TrimLeft(line, " "))
			marker := ""
			if strings.HasPrefix(prev, "<!--") {
				marker = prev
			}
			cur = &block{file: rel, section: section, lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), line: n + 1, marker: marker}
			continue
		}
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimSpace(strings.TrimPrefix(line, "## "))
		}
		if trimmed != "" {
			prev = trimmed
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: a code block is not closed", rel, cur.line-1)
	}
	return out
}

// splitComment splits a shell line into its command and its trailing
// comment (a # that starts a word outside quotes).
func splitComment(line string) (cmd, comment string) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' {
				i++
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '\\':
			i++
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
		}
	}
	return strings.TrimSpace(line), ""
}
