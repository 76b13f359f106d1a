package presence

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/fleethub/fleethub/hub/schema"
)

// AppendEntry appends e as JSON, as encoding/json writes it (without its
// HTML escaping, which JSON readers do not need), with no allocation
// beyond b's growth: refreshes encode thousands of entries a second.
func AppendEntry(b []byte, e *schema.PresenceEntry) []byte {
	b = append(b, `{"node":`...)
	b = appendJSONString(b, e.Node)
	b = append(b, `,"session":`...)
	b = appendJSONString(b, e.Session)
	b = append(b, `,"since":`...)
	b = strconv.AppendInt(b, e.Since, 10)
	b = append(b, `,"last_seen":`...)
	b = strconv.AppendInt(b, e.LastSeen, 10)
	b = append(b, `,"addr":`...)
	b = appendJSONString(b, e.Addr)
	if e.Type != "" {
		b = append(b, `,"type":`...)
		b = appendJSONString(b, e.Type)
	}
	if e.Group != "" {
		b = append(b, `,"group":`...)
		b = appendJSONString(b, e.Group)
	}
	return append(b, '}')
}

// AppendRecord appends r to b as json.Marshal renders it, byte for byte.
// Every connect and every disconnect stores one; their strings (serials,
// types, groups, node ids, reasons) need no escaping, so they are copied
// as they are, and a record with a string that does goes to json.Marshal.
func AppendRecord(b []byte, r *schema.PresenceRecord) []byte {
	if !plainJSON(r.SN) || !plainJSON(r.Type) || !plainJSON(r.Group) || !plainJSON(string(r.Reason)) || !plainJSON(r.Node) {
		j, _ := json.Marshal(r) // a struct of strings, a bool and an int: it cannot fail
		return append(b, j...)
	}
	b = append(b, `{"sn":"`...)
	b = append(b, r.SN...)
	b = append(b, `","type":"`...)
	b = append(b, r.Type...)
	b = append(b, `","group":"`...)
	b = append(b, r.Group...)
	b = append(b, `","online":`...)
	b = strconv.AppendBool(b, r.Online)
	b = append(b, `,"reason":"`...)
	b = append(b, r.Reason...)
	b = append(b, `","node":"`...)
	b = append(b, r.Node...)
	b = append(b, `","at":`...)
	b = strconv.AppendInt(b, r.At, 10)
	return append(b, '}')
}

// plainJSON reports whether json.Marshal renders s as it is, between
// quotes: printable ASCII but the quote, the backslash and the <, > and &
// it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and
// U+2029 escaped, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
