package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
)

// The args of the services whose checks are functions of their own, fuzzed
// without a bus. FuzzRequests covers every service through a session.

// FuzzSubscribeArgs: the args of /admin/subscribe and /admin/unsubscribe
// name only valid selectors and topics, never a group or a known device
// outside the caller's groups, and a caller's groups make no difference
// but a 403.
func FuzzSubscribeArgs(f *testing.F) {
	// R-3 is known by its presence entry alone, which presence reads from
	// its bucket.
	ns := natstest.Run(f)
	bus := startTestServer(f, natstest.Connect(f, ns), Config{})
	entry, _ := json.Marshal(PresenceEntry{Node: "other", Session: "s", Type: "dog", Group: "g2"})
	kv, err := bus.js.KeyValue(context.Background(), BucketPresence)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "R-3", entry); err != nil {
		f.Fatal(err)
	}
	srv := &Server{
		registry: &deviceRegistry{&watchCache[schema.Device]{entries: map[string]schema.Device{
			"R-1": {Type: "dog", Group: "g1"}, "R-2": {Type: "cat", Group: "g2"},
		}}},
		presence: bus.presence,
		// What reading devices' groups from JetStream needs: bus's own.
		runCtx: bus.runCtx, nc: bus.nc, log: bus.log, logLimit: bus.logLimit,
	}
	root := admin("root", "*")
	limited := admin("alice", "g1")
	for _, s := range []string{
		`{"devices":["R-1"]}`, `{"devices":["R-2","R-9"],"topics":["status"]}`, `{"devices":["R-3"]}`,
		`{"types":["dog"],"groups":["g1"],"topics":["presence","summary"],"min_priority":"high"}`,
		`{"groups":["g2"]}`, `{"all":true,"min_priority":"urgent"}`,
		`{"devices":["a.b"]}`, `{"types":["*"]}`, `{"groups":[">"]}`, `{"topics":["status"]}`, `{}`,
		`{"all":"yes"}`, `{"devices":"R-1"}`, `{"topics":["nope"],"all":true}`, `{"min_priority":null,"all":true}`,
		`{"Devices":["R-2"],"ALL":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, args []byte) {
		if !json.Valid(args) || !wire.IsObject(args) {
			return // Decode lets only objects through as args
		}
		var a subscribeArgs
		if werr := wire.DecodeArgs(args, &a); werr != nil {
			if werr.Code != wire.CodeBadRequest {
				t.Fatalf("DecodeArgs: code %d", werr.Code)
			}
			return
		}
		rootSels, rootTopics, rootMin, rootErr := a.parse(srv, root)
		sels, topics, minPriority, werr := a.parse(srv, limited)
		// Items are checked in order: alice fails where root does, or
		// earlier with a 403.
		if werr != nil {
			switch {
			case werr.Code == wire.CodeForbidden:
			case werr.Code != wire.CodeBadRequest && werr.Code != wire.CodeTooLarge:
				t.Fatalf("parse: code %d", werr.Code)
			case rootErr == nil || rootErr.Code != werr.Code:
				t.Fatalf("%v for alice, %v for root", werr, rootErr)
			}
		}
		if rootErr != nil {
			if rootErr.Code == wire.CodeForbidden {
				t.Fatalf("403 for root: %v", rootErr)
			}
			return
		}
		checkSubscription(t, srv, root, rootSels, rootTopics, rootMin)
		if werr == nil {
			checkSubscription(t, srv, limited, sels, topics, minPriority)
			if !reflect.DeepEqual(sels, rootSels) || topics != rootTopics || minPriority != rootMin {
				t.Fatalf("alice got %v %b %d, root %v %b %d", sels, topics, minPriority, rootSels, rootTopics, rootMin)
			}
		}
	})
}

func checkSubscription(t *testing.T, srv *Server, id *Identity, sels []string, topics topic, minPriority int) {
	t.Helper()
	if len(sels) == 0 || len(sels) > maxSelectorsPerRequest+1 {
		t.Fatalf("%d selectors", len(sels))
	}
	for _, sel := range sels {
		kind, v, _ := strings.Cut(sel, ":")
		switch {
		case sel == "all":
		case kind == "sn" && auth.ValidSerial(v):
			if _, group, ok := srv.deviceAttrs(v); ok && !auth.CanSee(id.Groups, group) {
				t.Fatalf("%s may subscribe to %s of group %s", id.User, sel, group)
			}
		case kind == "type" && subjects.ValidToken(v):
		case kind == "group" && subjects.ValidToken(v):
			if !auth.CanSee(id.Groups, v) {
				t.Fatalf("%s may subscribe to %s", id.User, sel)
			}
		default:
			t.Fatalf("selector %q", sel)
		}
	}
	if topics == 0 || topics&^(topicPresence|topicStatus|topicEvent|topicSummary) != 0 {
		t.Fatalf("topics %b", topics)
	}
	if minPriority < 0 || minPriority > priorities["emergency"] {
		t.Fatalf("min priority %d", minPriority)
	}
}

// FuzzStatusArgs: a status body the hub accepts holds the device model's
// fields as the protocol has them ({"code":int,"msg":string} when
// present), and the record the hub stores from it is one that every node's
// status follower reads back with that same status.
func FuzzStatusArgs(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"location":{"code":0,"msg":"ok","x":1.5},"electricity":{"code":1,"msg":"low","percent":12}}`,
		`{"inspection":null,"rubbish":{},"free":[1,"2"],"sn":"other","at":"soon"}`,
		`{"location":{"code":"0"}}`, `{"location":{"code":1.5}}`, `{"location":{"msg":7}}`, `{"location":[]}`,
		`{"location":{"code":9223372036854775808}}`, `{"location":{"code":1e2}}`, `{"location":"x"}`,
		`{"rubbish":{"code":1,"Code":"x"}}`, `{"rubbish":{"CODE":2}}`, `{"location":{"code":1},"location":5}`,
		`{"location":5,"location":{"code":1}}`, `{"electricity":{"msg":"\u2028<&>","code":-0}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, args []byte) {
		if !json.Valid(args) || !wire.IsObject(args) {
			return
		}
		body := map[string]json.RawMessage{}
		if werr := wire.DecodeArgs(args, &body); werr != nil {
			t.Fatalf("an object refused: %v", werr)
		}
		if werr := checkModel(body); werr != nil {
			if werr.Code != wire.CodeBadRequest || !strings.HasPrefix(werr.Msg, "args.") {
				t.Fatalf("checkModel: %d %q", werr.Code, werr.Msg)
			}
			return
		}
		for _, field := range modelFields {
			raw, ok := body[field]
			if !ok || wire.IsNull(raw) {
				continue
			}
			var v map[string]json.RawMessage
			if json.Unmarshal(raw, &v) != nil {
				t.Fatalf("%s = %s accepted: not an object", field, raw)
			}
			var code int64
			if c, ok := v["code"]; ok && json.Unmarshal(c, &code) != nil {
				t.Fatalf("%s = %s accepted: code is not an integer", field, raw)
			}
			var msg string
			if m, ok := v["msg"]; ok && json.Unmarshal(m, &msg) != nil {
				t.Fatalf("%s = %s accepted: msg is not a string", field, raw)
			}
		}
		// As serveStatus stores it, and onStatus reads it back.
		for _, k := range stampedFields {
			delete(body, k)
		}
		status, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("status %v not encoded: %v", body, err)
		}
		rec, _ := json.Marshal(StatusRecord{SN: "R-1", Type: "dog", Group: "g1", At: 1, Status: status})
		var back StatusRecord
		if err := json.Unmarshal(rec, &back); err != nil || back.SN != "R-1" || !wire.IsObject(back.Status) {
			t.Fatalf("record %s read back as %+v, %v", rec, back, err)
		}
		if !sameValues(status, back.Status) {
			t.Fatalf("status %s read back as %s", status, back.Status)
		}
	})
}

// FuzzPushArgs: the target of an /admin/push names one audience, whose
// subject parses back to it, and a body /admin/push accepts is one that
// every node's dispatch accepts from the bus and encodes to a valid push.
func FuzzPushArgs(f *testing.F) {
	for _, s := range []string{
		`{"target":{"sn":"R-1"},"service":"/push/x","values":{"a":1}}`,
		`{"target":{"all":true},"service":"/push/x","where":{"type":"dog","group":"g1"}}`,
		`{"target":{"role":"admin"},"service":"/push/y","values":null}`,
		`{"target":{"role":"root"},"service":"/push/x"}`, `{"target":{"all":false},"service":"/push/x"}`,
		`{"target":{"user":"a.b"},"service":"/push/x"}`, `{"target":{"planet":"mars"},"service":"/push/x"}`,
		`{"target":{"sn":"R-1","user":"u"},"service":"/push/x"}`, `{"target":{},"service":"/push/x"}`,
		`{"target":{"sn":7},"service":"/push/x"}`, `{"target":{"group":"g"},"service":"push"}`,
		`{"target":{"type":"t"},"service":"/push/x","values":[1]}`, `{"target":{"type":"t"},"service":"/push/x","where":{"node":"n"}}`,
		`{"target":{"sn":"R-1"},"service":"/push/x","values":{"k":"\u2028<>"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, args []byte) {
		if !json.Valid(args) || !wire.IsObject(args) {
			return
		}
		var a pushArgs
		if werr := wire.DecodeArgs(args, &a); werr != nil || a.Target == nil || a.Service == nil {
			return
		}
		target, werr := parsePushTarget(a.Target)
		if werr != nil {
			if werr.Code != wire.CodeBadRequest {
				t.Fatalf("parsePushTarget: code %d", werr.Code)
			}
			return
		}
		subj, err := target.Subject()
		if err != nil {
			t.Fatalf("target %v accepted without a subject: %v", target, err)
		}
		if back, err := subjects.ParsePush(subj); err != nil || back != target {
			t.Fatalf("target %v: subject %q parses to %v, %v", target, subj, back, err)
		}
		if target.Kind == subjects.KindRole && target.Value != string(auth.RoleDevice) &&
			target.Value != string(auth.RoleAdmin) && target.Value != string(auth.RoleViewer) {
			t.Fatalf("role %q accepted", target.Value)
		}
		body := schema.PushBody{Service: *a.Service, Values: a.Values, Where: a.Where, ID: "fz-1"}
		if body.Check() != nil {
			return
		}
		// What Publish sends, as dispatch reads it.
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("body %+v not encoded: %v", body, err)
		}
		var got schema.PushBody
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("published body %s unreadable: %v", data, err)
		}
		if err := got.Check(); err != nil {
			t.Fatalf("published body %s refused by dispatch: %v", data, err)
		}
		if got.Service != body.Service || got.ID != body.ID || !maps.Equal(got.Where, body.Where) || !sameValues(got.Values, body.Values) {
			t.Fatalf("published %+v, dispatch read %+v", body, got)
		}
		checkPushFrame(t, got)
	})
}

// checkPushFrame encodes an accepted push body as dispatch does and checks
// the frame a session gets: one line, the body's service and id, values
// an object equal to the body's.
func checkPushFrame(t *testing.T, body schema.PushBody) {
	t.Helper()
	frame, err := wire.EncodePush(body.Service, body.ID, body.Values)
	if err != nil {
		t.Fatalf("accepted body %+v not encoded: %v", body, err)
	}
	p := checkLine(t, frame)
	if p.Op != wire.OpPush || p.Service != body.Service || p.ID != body.ID || !sameValues(p.Values, body.Values) {
		t.Fatalf("body %+v encoded as %s", body, frame)
	}
}

// sameValues reports whether two values fields are the same JSON, absent
// and null counting as {}.
func sameValues(a, b json.RawMessage) bool {
	norm := func(r json.RawMessage) any {
		if wire.IsNull(r) {
			r = wire.EmptyObject
		}
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return r
		}
		return v
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
