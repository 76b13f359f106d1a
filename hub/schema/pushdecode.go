package schema

import (
	"encoding/json"

	"github.com/fleethub/fleethub/internal/jsonscan"
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
// input is not of the shape it reads (not necessarily invalid JSON).
type pushScanner struct {
	jsonscan.Scanner
}

// scanPushBody fills b from data when data has the common shape; it
// reports false, with b half filled, otherwise.
func scanPushBody(data []byte, b *PushBody) bool {
	*b = PushBody{}
	p := pushScanner{jsonscan.Scanner{D: data}}
	p.Space()
	var seen uint8
	ok := p.Object(func(key []byte) bool {
		var bit uint8
		switch string(key) {
		case "service":
			bit = 1
			s, ok := p.PlainString()
			if !ok {
				return false
			}
			b.Service = string(s)
		case "id":
			bit = 2
			s, ok := p.PlainString()
			if !ok {
				return false
			}
			b.ID = string(s)
		case "values":
			bit = 4
			start := p.I
			if !p.value(0) {
				return false
			}
			b.Values = json.RawMessage(data[start:p.I])
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
	p.Space()
	return ok && p.I == len(p.D)
}

// where reads a where object of plain strings, or null.
func (p *pushScanner) where(b *PushBody) bool {
	if p.Literal("null") {
		b.Where = nil
		return true
	}
	b.Where = make(map[string]string, 2)
	return p.Object(func(k []byte) bool {
		v, ok := p.PlainString()
		if ok {
			b.Where[string(k)] = string(v) // a repeated key: the last wins, as in encoding/json
		}
		return ok
	})
}

// value checks one JSON value of any kind, as encoding/json's scanner
// would (a string may hold any byte from 0x20 up, as there).
func (p *pushScanner) value(depth int) bool {
	if p.I >= len(p.D) {
		return false
	}
	switch c := p.D[p.I]; {
	case c == '{':
		if depth >= maxScanDepth {
			return false
		}
		p.I++
		p.Space()
		if p.Eat('}') {
			return true
		}
		for {
			p.Space()
			if !p.str() {
				return false
			}
			p.Space()
			if !p.Eat(':') {
				return false
			}
			p.Space()
			if !p.value(depth + 1) {
				return false
			}
			p.Space()
			if p.Eat(',') {
				continue
			}
			return p.Eat('}')
		}
	case c == '[':
		if depth >= maxScanDepth {
			return false
		}
		p.I++
		p.Space()
		if p.Eat(']') {
			return true
		}
		for {
			p.Space()
			if !p.value(depth + 1) {
				return false
			}
			p.Space()
			if p.Eat(',') {
				continue
			}
			return p.Eat(']')
		}
	case c == '"':
		return p.str()
	case c == 't':
		return p.Literal("true")
	case c == 'f':
		return p.Literal("false")
	case c == 'n':
		return p.Literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return false
}

// str checks a string with any escapes JSON allows.
func (p *pushScanner) str() bool {
	if !p.Eat('"') {
		return false
	}
	for p.I < len(p.D) {
		c := p.D[p.I]
		p.I++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if p.I >= len(p.D) {
				return false
			}
			e := p.D[p.I]
			p.I++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(p.D)-p.I < 4 {
					return false
				}
				for _, h := range p.D[p.I : p.I+4] {
					if !isHex(h) {
						return false
					}
				}
				p.I += 4
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
	p.Eat('-')
	switch {
	case p.Eat('0'):
	case p.digit19():
		p.digits()
	default:
		return false
	}
	if p.Eat('.') {
		if p.digits() == 0 {
			return false
		}
	}
	if p.Eat('e') || p.Eat('E') {
		if !p.Eat('+') {
			p.Eat('-')
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *pushScanner) digit19() bool {
	if p.I < len(p.D) && p.D[p.I] >= '1' && p.D[p.I] <= '9' {
		p.I++
		return true
	}
	return false
}

func (p *pushScanner) digits() int {
	n := 0
	for p.I < len(p.D) && p.D[p.I] >= '0' && p.D[p.I] <= '9' {
		p.I++
		n++
	}
	return n
}
