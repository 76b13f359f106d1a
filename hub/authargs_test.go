package hub

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
)

var deviceArgsSeeds = []string{
	`{"sn":"R-1","ts":1700000000,"nonce":"n-1","type":"dog","sig":"00ff"}`,
	`{"sn":"R-1","ts":1700000000,"nonce":"n-1","sig":"00ff"}`,
	` { "sn" : "R-1" , "ts" : -0 , "nonce" : "a b" , "sig" : "" } `,
	`{"sn":"R-1","ts":0,"nonce":"n","sig":"s","type":""}`,
	`{"sn":"R-1","ts":01,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":1.5,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":1e3,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":"1","nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":9223372036854775807,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":9223372036854775808,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":-9223372036854775808,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":999999999999999999,"nonce":"n","sig":"s"}`,
	`{"SN":"R-1","ts":1,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","sn":"R-2","ts":1,"nonce":"n","sig":"s"}`,
	`{"sn":null,"ts":1,"nonce":"n","sig":"s"}`,
	`{"sn":"R\u002d1","ts":1,"nonce":"n","sig":"s"}`,
	`{"sn":"R-1","ts":1,"nonce":"né","sig":"s"}`,
	`{"sn":"R-1","ts":1,"nonce":"n","sig":"s","type":7}`,
	`{"sn":"R-1","ts":1,"nonce":"n","sig":"s","extra":[1,{"a":null}]}`,
	`{"sn":7,"ts":1,"nonce":"n","sig":"s"}`,
	`{"ts":1}`, `{}`, `null`, ``, `[]`, `{"sn":"R-1",}`, `{"sn":"R-1"} x`, `{"sn":"R-1","ts":1,"nonce":"n","sig":"s"`,
}

func TestDecodeDeviceArgs(t *testing.T) {
	for _, s := range deviceArgsSeeds {
		checkDeviceArgs(t, []byte(s))
	}
	// The common shape is read by the scanner.
	if _, ok := scanDeviceArgs([]byte(deviceArgsSeeds[0])); !ok {
		t.Fatalf("scanner refused %s", deviceArgsSeeds[0])
	}
}

func TestDecodeDeviceArgsAllocs(t *testing.T) {
	args := json.RawMessage(deviceArgsSeeds[0])
	// One string each for sn, nonce, sig and type.
	if n := testing.AllocsPerRun(100, func() { _, _ = decodeDeviceArgs(args) }); n > 4 {
		t.Fatalf("%v allocations per decode", n)
	}
}

// FuzzDeviceArgs: decodeDeviceArgs answers exactly as encoding/json does,
// for every args an envelope lets through (or any bytes at all).
func FuzzDeviceArgs(f *testing.F) {
	for _, s := range deviceArgsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkDeviceArgs)
}

func checkDeviceArgs(t *testing.T, args []byte) {
	if !json.Valid(args) || !wire.IsObject(args) {
		// Decode lets only objects through as args; the scanner must
		// still refuse anything else.
		if l, ok := scanDeviceArgs(args); ok {
			t.Fatalf("scanner accepted %q as %+v", args, l)
		}
		return
	}
	got, gerr := decodeDeviceArgs(args)
	want, werr := deviceArgsByJSON(args)
	if got != want || (gerr == nil) != (werr == nil) || (gerr != nil && (gerr.Code != werr.Code || gerr.Msg != werr.Msg)) {
		t.Fatalf("%q: got %+v, %v; encoding/json: %+v, %v", args, got, gerr, want, werr)
	}
}

// BenchmarkDecodeDeviceArgs decodes a device's auth args.
func BenchmarkDecodeDeviceArgs(b *testing.B) {
	args := json.RawMessage(deviceArgsSeeds[0])
	b.ReportAllocs()
	for b.Loop() {
		if _, werr := decodeDeviceArgs(args); werr != nil {
			b.Fatal(werr)
		}
	}
}

// FuzzAuthValues: an auth answer's values are rendered exactly as
// json.Marshal renders them, for any strings and times.
func FuzzAuthValues(f *testing.F) {
	f.Add("AbCdEfGhIjKlMnOpQrStUv", "device", "node-1", int64(25000), "", int64(0), "R-1", "dog", "default", "", "", "")
	f.Add("s", "admin", "n", int64(-1), "tok.en", int64(1764625000000), "", "", "", "alice", "g1", "*")
	f.Add("", "", "", int64(0), "<&>", int64(-1<<63), "\u2028", "bad\xff", `q"`, "\x00", "", "g")
	f.Fuzz(func(t *testing.T, session, role, node string, ping int64, token string, expires int64, sn, typ, group, user, g1, g2 string) {
		v := authValues{Session: session, Role: auth.Role(role), Node: node, PingIntervalMS: ping, Token: token, ExpiresAt: expires,
			SN: sn, Type: typ, Group: group, User: user}
		for _, groups := range [][]string{nil, {}, {g1}, {g1, g2}} {
			v.Groups = groups
			want, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.encode(); !bytes.Equal(got, want) {
				t.Fatalf("%+v:\n got %s\nwant %s", v, got, want)
			}
		}
	})
}
