package schema

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestPushBodyCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		body PushBody
		want string // substring of the error; "" for none
	}{
		{"minimal", PushBody{Service: "/push/notice"}, ""},
		{"full", PushBody{Service: "/push/notice", Values: json.RawMessage(` {"a":1}`), Where: map[string]string{"group": "g1", "sn": "D1"}, ID: "x"}, ""},
		{"null values", PushBody{Service: "/push/notice", Values: json.RawMessage("null")}, ""},
		{"bad service", PushBody{Service: "push notice"}, "service:"},
		{"long service clipped", PushBody{Service: strings.Repeat("x", 100)}, `..."`},
		{"reserved", PushBody{Service: "/push/status"}, "hub's own"},
		{"array values", PushBody{Service: "/push/notice", Values: json.RawMessage(`[1]`)}, "values: must be an object"},
		{"unknown where", PushBody{Service: "/push/notice", Where: map[string]string{"color": "red"}}, `where: unknown attribute "color"`},
		{"long id", PushBody{Service: "/push/notice", ID: strings.Repeat("i", 129)}, "id: longer than 128 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.body.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	for _, s := range []string{"/push/presence", "/push/status", "/push/event", "/push/summary"} {
		b := PushBody{Service: s}
		if err := b.Check(); !errors.Is(err, ErrReservedService) {
			t.Errorf("%s: %v, want ErrReservedService", s, err)
		}
	}
}

func TestDeviceValidate(t *testing.T) {
	for _, tc := range []struct {
		d    Device
		errs int
	}{
		{Device{Type: "dog", Group: "g-1"}, 0},
		{Device{Type: "", Group: "g"}, 1},
		{Device{Type: "a.b", Group: "*"}, 2},
		{Device{Type: strings.Repeat("t", 65), Group: "g"}, 1},
		{Device{Type: "t", Group: "a b"}, 1},
	} {
		err := tc.d.Validate()
		n := 0
		if err != nil {
			n = len(strings.Split(err.Error(), "\n"))
		}
		if n != tc.errs {
			t.Errorf("%+v: %d problems (%v), want %d", tc.d, n, err, tc.errs)
		}
	}
}

func TestReasonKnown(t *testing.T) {
	for _, r := range []Reason{ReasonConnected, ReasonNodeLost, ReasonClosed, ReasonTimeout, ReasonReplaced, ReasonKicked} {
		if !r.Known() {
			t.Errorf("%q not known", r)
		}
	}
	for _, r := range []Reason{"", "online", "Closed"} {
		if r.Known() {
			t.Errorf("%q known", r)
		}
	}
}

// TestJSONNames pins the field names backends and tools read: they are
// the NATS-side contract (PROTOCOL §6) and never change.
func TestJSONNames(t *testing.T) {
	at := int64(5)
	for _, tc := range []struct {
		v    any
		want string
	}{
		{PresenceEntry{Node: "n1", Session: "s", Since: 1, LastSeen: 2, Addr: "a", Type: "t", Group: "g"},
			`{"node":"n1","session":"s","since":1,"last_seen":2,"addr":"a","type":"t","group":"g"}`},
		{PresenceEntry{Node: "n1"}, `{"node":"n1","session":"","since":0,"last_seen":0,"addr":""}`},
		{NodeEntry{Addr: "a", Since: 1, Sessions: 2}, `{"addr":"a","since":1,"sessions":2}`},
		{Device{Type: "t", Group: "g"}, `{"type":"t","group":"g"}`},
		{StatusRecord{SN: "D1", Type: "t", Group: "g", At: 1, Status: json.RawMessage(`{}`)},
			`{"sn":"D1","type":"t","group":"g","at":1,"status":{}}`},
		{EventRecord{SN: "D1", Type: "t", Group: "g", At: 1, Event: "e", Priority: "high", Data: json.RawMessage(`{}`)},
			`{"sn":"D1","type":"t","group":"g","at":1,"event":"e","priority":"high","data":{}}`},
		{PresenceRecord{SN: "D1", Type: "t", Group: "g", Online: true, Reason: ReasonConnected, Node: "n1", At: 1},
			`{"sn":"D1","type":"t","group":"g","online":true,"reason":"connected","node":"n1","at":1}`},
		{PushBody{Service: "/push/x"}, `{"service":"/push/x"}`},
		{CommandBody{Service: "/cmd"}, `{"service":"/cmd"}`},
		{Reply{Code: 404, Msg: "m"}, `{"code":404,"msg":"m","values":null}`},
		{DeviceView{SN: "D1", Status: json.RawMessage("null"), StatusAt: &at},
			`{"sn":"D1","type":"","group":"","online":false,"node":"","since":0,"last_seen":0,"status":null,"status_at":5}`},
		{Summary{At: 1, ByType: map[string]Counts{"t": {Online: 1}}, ByGroup: map[string]Counts{}},
			`{"at":1,"online":0,"offline":0,"by_type":{"t":{"online":1,"offline":0}},"by_group":{}}`},
	} {
		got, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("%T: %s, want %s", tc.v, got, tc.want)
		}
	}
}
