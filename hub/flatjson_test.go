package hub

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/jsonscan"
)

var flatSeeds = []string{
	`{"sn":"R-1","session":"AbC","node":"n1","at_ns":1764625000000000000}`,
	`{"sn":"R-1","type":"dog","group":"default","online":true,"reason":"connected","node":"n1","at":1764625000000}`,
	`{"sn":"R-1","type":"","group":"g","online":false,"reason":"timeout","node":"n1","at":-1}`,
	` { "sn" : "R-1" , "online" : true } `,
	`{"sn":"R-1","online":truex}`, `{"sn":"R-1","online":"true"}`, `{"sn":"R-1","online":null}`,
	`{"sn":"R-1","at_ns":1.5}`, `{"sn":"R-1","at":1e3}`, `{"sn":"R-1","at":01}`, `{"at":9223372036854775808}`,
	`{"at":-9223372036854775808}`, `{"at":-9223372036854775809}`, `{"at":9223372036854775807}`, `{"at":9999999999999999999}`, `{"at":10000000000000000000}`, `{"at":999999999999999999}`, `{"at":-0}`, `{"at_ns":-}`,
	`{"SN":"R-1"}`, `{"sn":"R-1","sn":"R-2"}`, `{"sn":"R\u002d1"}`, `{"sn":"é"}`, `{"sn":7}`, `{"x":[1]}`,
	`{"sn":"\u003c\u2028\"&","session":"\\","node":"\u00e9\ud800","at_ns":-1}`,
	`{}`, `null`, ``, `[]`, `{"sn":"R-1",}`, `{"sn":"R-1"} x`, `{"sn":"R-1"`,
}

// FuzzFlatDecoders: the takeover and presence record decoders answer
// exactly as json.Unmarshal does, for any bytes.
func FuzzFlatDecoders(f *testing.F) {
	for _, s := range flatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkFlatDecoders)
}

func TestFlatDecoders(t *testing.T) {
	for _, s := range flatSeeds {
		checkFlatDecoders(t, []byte(s))
	}
	var tk takeover
	var r schema.PresenceRecord
	p := flatScanner{jsonscan.Scanner{D: []byte(flatSeeds[0])}}
	if _, ok := p.object(func([]byte) (uint, bool) { return 0, false }); ok {
		t.Fatal("a key no field reads was accepted")
	}
	for _, c := range []struct {
		data string
		scan func([]byte) error
	}{
		{flatSeeds[0], func(b []byte) error { tk = takeover{}; return decodeTakeover(b, &tk) }},
		{flatSeeds[1], func(b []byte) error { r = schema.PresenceRecord{}; return decodePresenceRecord(b, &r) }},
	} {
		data := []byte(c.data)
		if n := testing.AllocsPerRun(100, func() { _ = c.scan(data) }); n > 5 {
			t.Errorf("%s: %v allocations", c.data, n)
		}
	}
}

func checkFlatDecoders(t *testing.T, data []byte) {
	var gt, wt takeover
	gerr, werr := decodeTakeover(data, &gt), json.Unmarshal(data, &wt)
	if (gerr == nil) != (werr == nil) || gt != wt {
		t.Fatalf("takeover %q: %+v, %v; json.Unmarshal %+v, %v", data, gt, gerr, wt, werr)
	}
	if want, _ := json.Marshal(gt); !bytes.Equal(gt.encode(), want) {
		t.Fatalf("takeover %+v encoded as %s, json.Marshal %s", gt, gt.encode(), want)
	}
	var gr, wr schema.PresenceRecord
	gerr, werr = decodePresenceRecord(data, &gr), json.Unmarshal(data, &wr)
	if (gerr == nil) != (werr == nil) || gr != wr {
		t.Fatalf("presence record %q: %+v, %v; json.Unmarshal %+v, %v", data, gr, gerr, wr, werr)
	}
}
