// Package jsonscan holds what the hub's hand scanners share: the reading
// of JSON's whitespace, punctuation, literals, plain strings, integers and
// objects, over a byte slice, without reflection.
//
// Each scanner built on it (a request or response frame in hub/wire, a
// device's auth args and other flat bodies in hub) reads only the common shape of what it decodes and leaves
// anything else to encoding/json: every method reports false when the
// input is not of the shape it reads (not necessarily invalid JSON), and
// what it accepts, it reads as encoding/json would. hub/schema's push body
// scanner has the same primitives of its own: that package is a leaf.
package jsonscan

import "unicode/utf8"

// Scanner reads D from I on.
type Scanner struct {
	D []byte
	I int
}

// Space skips whitespace.
func (p *Scanner) Space() {
	for p.I < len(p.D) {
		switch p.D[p.I] {
		case ' ', '\t', '\n', '\r':
			p.I++
		default:
			return
		}
	}
}

// Eat reads c, if it comes next.
func (p *Scanner) Eat(c byte) bool {
	if p.I < len(p.D) && p.D[p.I] == c {
		p.I++
		return true
	}
	return false
}

// Literal reads lit (true, false, null), if it comes next.
func (p *Scanner) Literal(lit string) bool {
	if len(p.D)-p.I >= len(lit) && string(p.D[p.I:p.I+len(lit)]) == lit {
		p.I += len(lit)
		return true
	}
	return false
}

// PlainString reads a string with no escape, no control character and no
// invalid UTF-8: its bytes are then exactly the string encoding/json
// decodes.
func (p *Scanner) PlainString() ([]byte, bool) {
	if !p.Eat('"') {
		return nil, false
	}
	start, ascii := p.I, true
	for p.I < len(p.D) {
		c := p.D[p.I]
		switch {
		case c == '"':
			s := p.D[start:p.I]
			p.I++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.I++
	}
	return nil, false
}

// Object reads an object whose keys are plain strings, calling field with
// each key and the scanner at its value, which field reads (or reports
// false for).
func (p *Scanner) Object(field func(key []byte) bool) bool {
	if !p.Eat('{') {
		return false
	}
	p.Space()
	if p.Eat('}') {
		return true
	}
	for {
		p.Space()
		key, ok := p.PlainString()
		if !ok {
			return false
		}
		p.Space()
		if !p.Eat(':') {
			return false
		}
		p.Space()
		if !field(key) {
			return false
		}
		p.Space()
		if p.Eat(',') {
			continue
		}
		return p.Eat('}')
	}
}

// maxDigits is the most digits Int64 reads: an int64 has at most 19, and
// any 19 digits fit a uint64.
const maxDigits = 19

// Int64 reads a JSON number with no fraction and no exponent that fits an
// int64 (encoding/json refuses the rest for an int64).
func (p *Scanner) Int64() (int64, bool) {
	neg := p.Eat('-')
	start := p.I
	var u uint64
	for p.I < len(p.D) && p.D[p.I] >= '0' && p.D[p.I] <= '9' {
		u = u*10 + uint64(p.D[p.I]-'0')
		p.I++
	}
	digits := p.I - start
	if digits == 0 || digits > maxDigits || (digits > 1 && p.D[start] == '0') {
		return 0, false // not a number, too long, or a leading zero (invalid JSON)
	}
	if p.I < len(p.D) && (p.D[p.I] == '.' || p.D[p.I] == 'e' || p.D[p.I] == 'E') {
		return 0, false // a fraction or an exponent
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true // -(1<<63) wraps to itself, math.MinInt64
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}
