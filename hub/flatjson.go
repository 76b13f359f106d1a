package hub

import (
	"encoding/json"

	"github.com/fleethub/fleethub/hub/schema"
)

// flatScanner reads flat JSON objects of a known shape (a device's auth
// args, the bodies of takeovers and presence records), which every
// connect decodes on every node, without encoding/json's reflection.
// Each decoder built on it reads only its common shape and leaves
// anything else to encoding/json, which then decides: each method reports
// false when the input is not of the shape it reads (not necessarily
// invalid JSON), and what scanFlat accepts is always valid JSON that
// encoding/json decodes to the same values.
type flatScanner struct {
	d []byte
	i int
}

// object reads the scanner's whole input, a JSON object, calling field
// with each key (a plain string) and the scanner at its value, which field
// reads, and returns the bits of the fields seen. field returns its key's
// bit (one bit a key), or false for a key or value it does not read
// itself. A repeated key (encoding/json keeps the last) is not read
// either.
func (p *flatScanner) object(field func(key []byte) (bit uint, ok bool)) (seen uint, ok bool) {
	p.space()
	if !p.eat('{') {
		return 0, false
	}
	p.space()
	if !p.eat('}') {
		for {
			p.space()
			key, ok := p.plainString()
			if !ok {
				return 0, false
			}
			p.space()
			if !p.eat(':') {
				return 0, false
			}
			p.space()
			bit, ok := field(key)
			if !ok || bit == 0 || seen&bit != 0 {
				return 0, false
			}
			seen |= bit
			p.space()
			if p.eat(',') {
				continue
			}
			if !p.eat('}') {
				return 0, false
			}
			break
		}
	}
	p.space()
	return seen, p.i == len(p.d)
}

func (p *flatScanner) space() {
	for p.i < len(p.d) {
		switch p.d[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *flatScanner) eat(c byte) bool {
	if p.i < len(p.d) && p.d[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString reads a string of printable ASCII with no escape: its bytes
// are then exactly the string encoding/json would decode.
func (p *flatScanner) plainString() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.d) {
		c := p.d[p.i]
		switch {
		case c == '"':
			s := p.d[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// maxFlatDigits is the most digits integer reads: an int64 has at most
// 19, and any 19 digits fit a uint64.
const maxFlatDigits = 19

// integer reads a JSON number with no fraction and no exponent that fits
// an int64 (encoding/json refuses the rest for an int64).
func (p *flatScanner) integer() (int64, bool) {
	neg := p.eat('-')
	start := p.i
	var u uint64
	for p.i < len(p.d) && p.d[p.i] >= '0' && p.d[p.i] <= '9' {
		u = u*10 + uint64(p.d[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > maxFlatDigits || (digits > 1 && p.d[start] == '0') {
		return 0, false // not a number, too long, or a leading zero (invalid JSON)
	}
	if p.i < len(p.d) && (p.d[p.i] == '.' || p.d[p.i] == 'e' || p.d[p.i] == 'E') {
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

// boolean reads true or false.
func (p *flatScanner) boolean() (bool, bool) {
	rest := p.d[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// decodeTakeover decodes a takeover announcement's body into t as
// json.Unmarshal(data, t) does, t zero to begin with: every node decodes
// every device's, signed by a node, in the shape json.Marshal gives it.
func decodeTakeover(data []byte, t *takeover) error {
	p := flatScanner{d: data}
	_, ok := p.object(func(key []byte) (bit uint, ok bool) {
		var s []byte
		switch string(key) {
		case "sn":
			s, ok = p.plainString()
			t.SN = string(s)
			return 1, ok
		case "session":
			s, ok = p.plainString()
			t.Session = string(s)
			return 2, ok
		case "node":
			s, ok = p.plainString()
			t.Node = string(s)
			return 4, ok
		case "at_ns":
			t.AtNS, ok = p.integer()
			return 8, ok
		}
		return 0, false
	})
	if ok {
		return nil
	}
	*t = takeover{}
	return json.Unmarshal(data, t)
}

// decodePresenceRecord decodes a presence record into r as
// json.Unmarshal(data, r) does, r zero to begin with: every node's
// directory reads every device's records, in the shape the hub writes.
func decodePresenceRecord(data []byte, r *schema.PresenceRecord) error {
	p := flatScanner{d: data}
	_, ok := p.object(func(key []byte) (bit uint, ok bool) {
		var s []byte
		switch string(key) {
		case "sn":
			s, ok = p.plainString()
			r.SN = string(s)
			return 1, ok
		case "type":
			s, ok = p.plainString()
			r.Type = string(s)
			return 2, ok
		case "group":
			s, ok = p.plainString()
			r.Group = string(s)
			return 4, ok
		case "online":
			r.Online, ok = p.boolean()
			return 8, ok
		case "reason":
			s, ok = p.plainString()
			r.Reason = schema.Reason(s)
			return 16, ok
		case "node":
			s, ok = p.plainString()
			r.Node = string(s)
			return 32, ok
		case "at":
			r.At, ok = p.integer()
			return 64, ok
		}
		return 0, false
	})
	if ok {
		return nil
	}
	*r = schema.PresenceRecord{}
	return json.Unmarshal(data, r)
}
