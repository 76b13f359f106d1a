package wire

import (
	"bytes"
	"encoding/json"

	"github.com/fleethub/fleethub/internal/jsonscan"
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
	p := scanner{jsonscan.Scanner{D: line}}
	p.Space()
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
	ok := p.Object(func(key []byte) bool {
		var (
			bit uint8
			s   []byte
			ok  bool
		)
		switch string(key) {
		case "op":
			bit = haveOp
			op, ok = p.PlainString()
		case "service":
			bit = haveService
			s, ok = p.PlainString()
			m.Service = string(s)
		case "request_id":
			bit = haveRequestID
			s, ok = p.PlainString()
			m.RequestID = string(s)
		case "args":
			bit = haveArgs
			args, ok = p.object()
		case "code":
			bit = haveCode
			m.Code, ok = p.integer()
		case "msg":
			bit = haveMsg
			s, ok = p.PlainString()
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
		return true
	})
	if !ok {
		return false
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

// scanner reads a frame of a known shape: jsonscan's reading, and an
// object skipped whole.
type scanner struct {
	jsonscan.Scanner
}

// integer reads a JSON number with no fraction and no exponent that fits
// an int (encoding/json refuses the rest for an int).
func (p *scanner) integer() (int, bool) {
	n, ok := p.Int64()
	if !ok || int64(int(n)) != n {
		return 0, false
	}
	return int(n), true
}

// object reads an object, valid JSON (json.Valid has seen it), and
// returns its bytes.
func (p *scanner) object() ([]byte, bool) {
	if p.I >= len(p.D) || p.D[p.I] != '{' {
		return nil, false
	}
	start, depth, in := p.I, 0, false
	for ; p.I < len(p.D); p.I++ {
		switch c := p.D[p.I]; {
		case in:
			switch c {
			case '\\':
				p.I++ // the escaped byte cannot end the string
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
				p.I++
				return p.D[start:p.I], true
			}
		}
	}
	return nil, false
}
