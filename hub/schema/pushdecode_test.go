package schema

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// pushBodySeeds are bodies of every shape the scanner reads itself and of
// the shapes it leaves to encoding/json.
var pushBodySeeds = []string{
	`{"service":"/push/x","values":{"a":[1,2]}}`,
	` { "service" : "/push/x" , "values" : { "a" : [ 1 , 2.5e-3 , -0 , true , false , null ] } } `,
	`{"service":"/push/x","values":{"k":"a b\"c\\\/\b\f\n\r\t\u00e9\u2028"},"where":{"type":"dog","group":"g1"},"id":"p1"}`,
	`{"service":"/push/x","where":{"type":"dog","type":"cat"}}`,
	`{"service":"/push/x","where":null,"values":null,"id":""}`,
	`{"service":"/push/x","where":{}}`,
	`{}`,
	`{"service":"/push/é","id":"ü"}`,
	`{"service":"/push/x","service":"/push/y"}`,
	`{"service":"/push/x","Service":"/push/y"}`,
	`{"SERVICE":"/push/x"}`,
	`{"ſervice":"/push/x"}`,
	`{"servic\u0065":"/push/x"}`,
	`{"service":"/push/\u0078"}`,
	`{"service":"/push/x\xff"}`,
	`{"service":"/push/x","values":"\xff"}`,
	`{"service":"/push/x","values":{"a":01}}`,
	`{"service":"/push/x","values":{"a":1.}}`,
	`{"service":"/push/x","values":{"a":-}}`,
	`{"service":"/push/x","values":{"a":1e}}`,
	`{"service":"/push/x","values":{"a":"\x01"}}`,
	`{"service":"/push/x","values":{"a":"\u12"}}`,
	`{"service":"/push/x","values":{"a":"\q"}}`,
	`{"service":"/push/x","values":{"a":1,}}`,
	`{"service":"/push/x","values":[1,]}`,
	`{"service":"/push/x","values":tru}`,
	`{"service":"/push/x","values":{"a":1}}x`,
	`{"service":"/push/x","values":{"a":1}} {}`,
	`{"service":"/push/x",}`,
	`{"service":null}`,
	`{"service":5}`,
	`{"service":"/push/x","where":{"type":5}}`,
	`{"service":"/push/x","where":{"type":null}}`,
	`{"service":"/push/x","where":[]}`,
	`{"service":"/push/x","other":{"deep":[1,2,3]}}`,
	`{"service":"/push/x","values":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
	`{"service":"/push/x","values":` + strings.Repeat(`{"a":`, 63) + `1` + strings.Repeat("}", 63) + `}`,
	`null`, `[]`, `"x"`, ``, ` `, `{`, `{"service"`, `{"service":`, `{"service":"/push/x"`, `not json`,
	"\xef\xbb\xbf{}",
}

// The scanner and encoding/json agree on every body: both accept it with
// the same result, or both refuse it.
func FuzzDecodePushBody(f *testing.F) {
	for _, s := range pushBodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want, got PushBody
		werr := json.Unmarshal(data, &want)
		gerr := DecodePushBody(data, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: encoding/json says %v, DecodePushBody %v", data, werr, gerr)
		}
		if werr == nil && !samePushBody(got, want) {
			t.Fatalf("%q: decoded as %+v, encoding/json %+v", data, got, want)
		}
		var scanned PushBody
		if scanPushBody(data, &scanned) && (werr != nil || !samePushBody(scanned, want)) {
			t.Fatalf("%q: scanned as %+v, encoding/json %+v (%v)", data, scanned, want, werr)
		}
	})
}

func samePushBody(a, b PushBody) bool {
	return a.Service == b.Service && a.ID == b.ID && reflect.DeepEqual(a.Where, b.Where) &&
		(a.Values == nil) == (b.Values == nil) && bytes.Equal(a.Values, b.Values)
}

// The common shapes are read by the scanner, not left to encoding/json.
func TestScanPushBodyCommonShapes(t *testing.T) {
	for _, s := range []string{
		`{"service":"/push/bench","values":{"t":1764625000000000000,"s":12345,"p":"xxxx"}}`,
		`{"service":"/push/x","values":{"a":[1,{"b":null}],"c":"d e"},"where":{"type":"dog"},"id":"p1"}`,
		"{\n  \"service\": \"/push/x\",\n  \"values\": {\n    \"k\": 1\n  }\n}\n",
		`{"id":"x","values":{},"where":{"group":"g1","sn":"D1"},"service":"/push/x"}`,
	} {
		var b PushBody
		if !scanPushBody([]byte(s), &b) {
			t.Errorf("%q left to encoding/json", s)
		}
	}
}
