package hub

import (
	"encoding/json"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/jsonscan"
)

// deviceArgs is the args of /auth/device as encoding/json decodes them:
// a nil field was absent (or null).
type deviceArgs struct {
	SN    *string `json:"sn"`
	TS    *int64  `json:"ts"`
	Nonce *string `json:"nonce"`
	Sig   *string `json:"sig"`
	Type  string  `json:"type"`
}

// deviceLogin is what a device's auth request says, every required field
// present.
type deviceLogin struct {
	proof auth.DeviceProof
	typ   string // "" when not given
}

// decodeDeviceArgs decodes the args of /auth/device and checks that the
// proof's fields are there, with the results, errors included, of
// wire.DecodeArgs into deviceArgs followed by the checks for each field in
// turn.
//
// Every device sends one at every connect, and they all have one shape:
// the keys under their own names, once each, strings with no escape and
// ts a plain integer. scanDeviceArgs reads that shape
// without reflection or a decoder; anything else (other keys, escapes,
// null, a repeated key, a missing field, an error of any kind) goes to
// wire.DecodeArgs, which then decides. The scanner thus never refuses
// args, and never accepts args that encoding/json would refuse or read
// otherwise.
func decodeDeviceArgs(args json.RawMessage) (deviceLogin, *wire.Error) {
	if l, ok := scanDeviceArgs(args); ok {
		return l, nil
	}
	return deviceArgsByJSON(args)
}

// deviceArgsByJSON is decodeDeviceArgs through encoding/json alone.
func deviceArgsByJSON(args json.RawMessage) (deviceLogin, *wire.Error) {
	var a deviceArgs
	if werr := wire.DecodeArgs(args, &a); werr != nil {
		return deviceLogin{}, werr
	}
	switch {
	case a.SN == nil:
		return deviceLogin{}, missing("sn")
	case a.TS == nil:
		return deviceLogin{}, missing("ts")
	case a.Nonce == nil:
		return deviceLogin{}, missing("nonce")
	case a.Sig == nil:
		return deviceLogin{}, missing("sig")
	}
	return deviceLogin{
		proof: auth.DeviceProof{SN: *a.SN, TS: *a.TS, Nonce: *a.Nonce, Sig: *a.Sig},
		typ:   a.Type,
	}, nil
}

// The keys of deviceArgs, as bits of what scanDeviceArgs has seen.
const (
	argSN = 1 << iota
	argTS
	argNonce
	argSig
	argType

	argsRequired = argSN | argTS | argNonce | argSig
)

// scanDeviceArgs reads args of the common shape (see decodeDeviceArgs),
// reporting false for anything else.
func scanDeviceArgs(args []byte) (deviceLogin, bool) {
	var l deviceLogin
	p := flatScanner{jsonscan.Scanner{D: args}}
	seen, ok := p.object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "sn":
			return argSN, p.str(&l.proof.SN)
		case "ts":
			l.proof.TS, ok = p.Int64()
			return argTS, ok
		case "nonce":
			return argNonce, p.str(&l.proof.Nonce)
		case "sig":
			return argSig, p.str(&l.proof.Sig)
		case "type":
			return argType, p.str(&l.typ)
		}
		return 0, false
	})
	return l, ok && seen&argsRequired == argsRequired
}
