package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// scanMessage decodes line into m when line is a message of the common
// shape, with the result Decode's encoding/json path gives; it reports
// false, m half filled, for anything else, which that path then decides.
//
// Every frame a client sends is decoded, a connect storm's auth requests
// included, so the shape clients send is read by a scanner instead of
// encoding/json's reflection: a request (op, service, request_id, args)
// or a response (op, request_id, service, code, msg, values), each key
// under its own name and at most once, strings with no escape (line is
// valid UTF-8 already), request_id a string, code a plain integer, args
// and values objects, and nothing null. Any other key, a repeated key,
// an escape, a null, a value of another type or a message Decode refuses
// goes to encoding/json. line is checked with json.Valid first, so that
// what the scanner accepts encoding/json would accept too, and the
// scanner itself need only find where each value ends.
func scanMessage(line []byte, m *Message) bool {
	if !json.Valid(line) {
		return false
	}
	p := scanner{d: line}
	p.space()
	if !p.eat('{') {
		return false
	}
	const (
		haveOp = 1 << iota
		haveService
		haveRequestID
		haveArgs
		haveCode
		haveMsg
		haveValues
	)
	var seen uint8
	var op, args, values []byte
	p.space()
	for !p.eat('}') {
		if seen != 0 && !p.eat(',') {
			return false
		}
		p.space()
		key, ok := p.plainString()
		if !ok {
			return false
		}
		p.space()
		p.eat(':') // json.Valid saw it
		p.space()
		var bit uint8
		var s []byte
		switch string(key) {
		case "op":
			bit = haveOp
			op, ok = p.plainString()
		case "service":
			bit = haveService
			s, ok = p.plainString()
			m.Service = string(s)
		case "request_id":
			bit = haveRequestID
			s, ok = p.plainString()
			m.RequestID = string(s)
		case "args":
			bit = haveArgs
			args, ok = p.object()
		case "code":
			bit = haveCode
			m.Code, ok = p.integer()
		case "msg":
			bit = haveMsg
			s, ok = p.plainString()
			m.Msg = string(s)
		case "values":
			bit = haveValues
			values, ok = p.object()
		}
		// An unknown key (encoding/json matches keys without regard to
		// case) and a repeated one (it keeps the last) are its business.
		if bit == 0 || !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		p.space()
	}
	m.HasRequestID = seen&haveRequestID != 0
	switch string(op) {
	case OpRequest:
		if m.Service == "" || seen&(haveCode|haveMsg|haveValues) != 0 {
			return false
		}
		m.Op = OpRequest
		if args != nil {
			m.Args = bytes.Clone(args) // as encoding/json leaves it: the frame's buffer is not kept
		}
	case OpResponse:
		if m.RequestID == "" || seen&haveArgs != 0 {
			return false
		}
		m.Op = OpResponse
		if values != nil {
			m.Values = bytes.Clone(values)
		}
	default:
		return false
	}
	return true
}

// scanner reads JSON of a known shape. Each method reports false when the
// input is not of the shape it reads (not necessarily invalid JSON).
type scanner struct {
	d []byte
	i int
}

func (p *scanner) space() {
	for p.i < len(p.d) {
		switch p.d[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.d) && p.d[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString reads a string with no escape. In valid UTF-8, its bytes
// are then exactly the string encoding/json decodes.
func (p *scanner) plainString() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.d) {
		switch c := p.d[p.i]; {
		case c == '"':
			s := p.d[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// maxScanDigits is the most digits integer reads itself: any such number
// fits an int. Longer ones go to encoding/json, which tells one that
// overflows from one that does not.
const maxScanDigits = 9 + 9*(strconv.IntSize/64)

// integer reads a JSON number with no fraction and no exponent, of at
// most maxScanDigits digits.
func (p *scanner) integer() (int, bool) {
	neg := p.eat('-')
	start := p.i
	n := 0
	for p.i < len(p.d) && p.d[p.i] >= '0' && p.d[p.i] <= '9' {
		n = n*10 + int(p.d[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > maxScanDigits {
		return 0, false
	}
	if p.i < len(p.d) && (p.d[p.i] == '.' || p.d[p.i] == 'e' || p.d[p.i] == 'E') {
		return 0, false // encoding/json refuses a fraction or an exponent for an int
	}
	if neg {
		n = -n
	}
	return n, true
}

// object reads an object, valid JSON (json.Valid has seen it), and
// returns its bytes.
func (p *scanner) object() ([]byte, bool) {
	if p.i >= len(p.d) || p.d[p.i] != '{' {
		return nil, false
	}
	start, depth, in := p.i, 0, false
	for ; p.i < len(p.d); p.i++ {
		switch c := p.d[p.i]; {
		case in:
			switch c {
			case '\\':
				p.i++ // the escaped byte cannot end the string
			case '"':
				in = false
			}
		case c == '"':
			in = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				p.i++
				return p.d[start:p.i], true
			}
		}
	}
	return nil, false
}
