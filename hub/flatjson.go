package hub

import (
	"encoding/json"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/jsonscan"
)

// flatScanner reads flat JSON objects of a known shape (a device's auth
// args, the bodies of takeovers and presence records), which every
// connect decodes on every node, without encoding/json's reflection.
// Each decoder built on it reads only its common shape and leaves
// anything else to encoding/json, which then decides: each method reports
// false when the input is not of the shape it reads (not necessarily
// invalid JSON), and what it accepts is always valid JSON that
// encoding/json decodes to the same values.
type flatScanner struct {
	jsonscan.Scanner
}

// object reads the scanner's whole input, a JSON object, calling field
// with each key (a plain string) and the scanner at its value, which field
// reads, and returns the bits of the fields seen. field returns its key's
// bit (one bit a key), or false for a key or value it does not read
// itself. A repeated key (encoding/json keeps the last) is not read
// either.
func (p *flatScanner) object(field func(key []byte) (bit uint, ok bool)) (seen uint, ok bool) {
	p.Space()
	ok = p.Object(func(key []byte) bool {
		bit, ok := field(key)
		if !ok || bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
	p.Space()
	return seen, ok && p.I == len(p.D)
}

// str reads a plain string into dst.
func (p *flatScanner) str(dst *string) bool {
	s, ok := p.PlainString()
	*dst = string(s)
	return ok
}

// boolean reads true or false.
func (p *flatScanner) boolean() (bool, bool) {
	switch {
	case p.Literal("true"):
		return true, true
	case p.Literal("false"):
		return false, true
	}
	return false, false
}

// decodeTakeover decodes a takeover announcement's body into t as
// json.Unmarshal(data, t) does, t zero to begin with: every node decodes
// every device's, signed by a node, in the shape json.Marshal gives it.
func decodeTakeover(data []byte, t *takeover) error {
	p := flatScanner{jsonscan.Scanner{D: data}}
	_, ok := p.object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "sn":
			return 1, p.str(&t.SN)
		case "session":
			return 2, p.str(&t.Session)
		case "node":
			return 4, p.str(&t.Node)
		case "at_ns":
			t.AtNS, ok = p.Int64()
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
	p := flatScanner{jsonscan.Scanner{D: data}}
	_, ok := p.object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "sn":
			return 1, p.str(&r.SN)
		case "type":
			return 2, p.str(&r.Type)
		case "group":
			return 4, p.str(&r.Group)
		case "online":
			r.Online, ok = p.boolean()
			return 8, ok
		case "reason":
			var reason string
			ok = p.str(&reason)
			r.Reason = schema.Reason(reason)
			return 16, ok
		case "node":
			return 32, p.str(&r.Node)
		case "at":
			r.At, ok = p.Int64()
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
