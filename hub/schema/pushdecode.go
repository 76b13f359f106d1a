package schema

import (
	"encoding/json"
	"unicode/utf8"
)

// DecodePushBody decodes data into b exactly as json.Unmarshal(data, b)
// does: the same bodies are accepted, with the same fields, and the same
// ones refused (b then holds whatever json.Unmarshal left in it).
//
// Every node decodes every push that reaches it, so the common shape (the
// four fields under their own lowercase names, each at most once, plain
// strings, a where of strings) is read by a scanner without reflection,
// values kept as a slice of data rather than a copy. Anything else (other
// keys, escapes in a key or a plain string, invalid UTF-8, a null where a
// string belongs, nesting deeper than maxScanDepth, or any error) goes to
// encoding/json, which then decides: the scanner never refuses a body,
// and never accepts one that encoding/json would refuse.
//
// b.Values aliases data: it is valid as long as data is.
func DecodePushBody(data []byte, b *PushBody) error {
	if scanPushBody(data, b) {
		return nil
	}
	// Decoded into its own variable, so that only this path allocates it
	// (b does not escape).
	var slow PushBody
	err := json.Unmarshal(data, &slow)
	*b = slow
	return err
}

// maxScanDepth is the deepest nesting of values the scanner reads itself;
// deeper ones go to encoding/json (which allows 10,000 levels).
const maxScanDepth = 64

// pushScanner reads one push body. Each method reports false when the
// input is not of the shape it reads (not necessarily invalid JSON). Its
// primitives are internal/jsonscan's, written again here: hub/schema is a
// leaf that imports subjects alone (STYLE.md), so that backends and
// hubctl take nothing else with it.
type pushScanner struct {
	d []byte
	i int
}

// scanPushBody fills b from data when data has the common shape; it
// reports false, with b half filled, otherwise.
func scanPushBody(data []byte, b *PushBody) bool {
	*b = PushBody{}
	p := pushScanner{d: data}
	p.space()
	var seen uint8
	ok := p.object(func(key []byte) bool {
		var bit uint8
		switch string(key) {
		case "service":
			bit = 1
			s, ok := p.plainString()
			if !ok {
				return false
			}
			b.Service = string(s)
		case "id":
			bit = 2
			s, ok := p.plainString()
			if !ok {
				return false
			}
			b.ID = string(s)
		case "values":
			bit = 4
			start := p.i
			if !p.value(0) {
				return false
			}
			b.Values = json.RawMessage(data[start:p.i])
		case "where":
			bit = 8
			if !p.where(b) {
				return false
			}
		default:
			return false
		}
		// A repeated key: encoding/json keeps the last (and merges a
		// repeated where), which is its business.
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
	p.space()
	return ok && p.i == len(p.d)
}

// object reads an object whose keys are plain strings, calling each with
// every key and the scanner at its value, which each reads.
func (p *pushScanner) object(each func(key []byte) bool) bool {
	if !p.eat('{') {
		return false
	}
	p.space()
	if p.eat('}') {
		return true
	}
	for {
		p.space()
		key, ok := p.plainString()
		if !ok {
			return false
		}
		p.space()
		if !p.eat(':') {
			return false
		}
		p.space()
		if !each(key) {
			return false
		}
		p.space()
		if p.eat(',') {
			continue
		}
		return p.eat('}')
	}
}

func (p *pushScanner) space() {
	for p.i < len(p.d) {
		switch p.d[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *pushScanner) eat(c byte) bool {
	if p.i < len(p.d) && p.d[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *pushScanner) literal(lit string) bool {
	if len(p.d)-p.i >= len(lit) && string(p.d[p.i:p.i+len(lit)]) == lit {
		p.i += len(lit)
		return true
	}
	return false
}

// plainString reads a string with no escape and no invalid UTF-8: its
// bytes are then exactly the string encoding/json would decode.
func (p *pushScanner) plainString() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start, ascii := p.i, true
	for p.i < len(p.d) {
		c := p.d[p.i]
		switch {
		case c == '"':
			s := p.d[start:p.i]
			p.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return nil, false
}

// where reads a where object of plain strings, or null.
func (p *pushScanner) where(b *PushBody) bool {
	if p.literal("null") {
		b.Where = nil
		return true
	}
	b.Where = make(map[string]string, 2)
	return p.object(func(k []byte) bool {
		v, ok := p.plainString()
		if ok {
			b.Where[string(k)] = string(v) // a repeated key: the last wins, as in encoding/json
		}
		return ok
	})
}

// value checks one JSON value of any kind, as encoding/json's scanner
// would (a string may hold any byte from 0x20 up, as there).
func (p *pushScanner) value(depth int) bool {
	if p.i >= len(p.d) {
		return false
	}
	switch c := p.d[p.i]; {
	case c == '{':
		if depth >= maxScanDepth {
			return false
		}
		p.i++
		p.space()
		if p.eat('}') {
			return true
		}
		for {
			p.space()
			if !p.str() {
				return false
			}
			p.space()
			if !p.eat(':') {
				return false
			}
			p.space()
			if !p.value(depth + 1) {
				return false
			}
			p.space()
			if p.eat(',') {
				continue
			}
			return p.eat('}')
		}
	case c == '[':
		if depth >= maxScanDepth {
			return false
		}
		p.i++
		p.space()
		if p.eat(']') {
			return true
		}
		for {
			p.space()
			if !p.value(depth + 1) {
				return false
			}
			p.space()
			if p.eat(',') {
				continue
			}
			return p.eat(']')
		}
	case c == '"':
		return p.str()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return false
}

// str checks a string with any escapes JSON allows.
func (p *pushScanner) str() bool {
	if !p.eat('"') {
		return false
	}
	for p.i < len(p.d) {
		c := p.d[p.i]
		p.i++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if p.i >= len(p.d) {
				return false
			}
			e := p.d[p.i]
			p.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(p.d)-p.i < 4 {
					return false
				}
				for _, h := range p.d[p.i : p.i+4] {
					if !isHex(h) {
						return false
					}
				}
				p.i += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *pushScanner) number() bool {
	p.eat('-')
	switch {
	case p.eat('0'):
	case p.digit19():
		p.digits()
	default:
		return false
	}
	if p.eat('.') {
		if p.digits() == 0 {
			return false
		}
	}
	if p.eat('e') || p.eat('E') {
		if !p.eat('+') {
			p.eat('-')
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *pushScanner) digit19() bool {
	if p.i < len(p.d) && p.d[p.i] >= '1' && p.d[p.i] <= '9' {
		p.i++
		return true
	}
	return false
}

func (p *pushScanner) digits() int {
	n := 0
	for p.i < len(p.d) && p.d[p.i] >= '0' && p.d[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}
