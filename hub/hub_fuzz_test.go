package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The decoders of a running hub, fuzzed through the functions that hold
// them: client frames through Session.HandleFrame, bodies from the bus
// through dispatch, deliverCommand and the replies of a hostile responder,
// records and bucket entries through the followers and watchers that read
// them. Each target starts one real hub on an in-process NATS server, with
// a device, an admin and a viewer on fake transports, and checks every
// frame any of them receives.

// fuzzHub is a hub with a few sessions, shared by the inputs of one target.
type fuzzHub struct {
	srv      *Server
	nc       *nats.Conn     // a backend's connection
	sessions [3]*fuzzPeer   // device, admin, viewer; replaced once closed
	reply    atomic.Value   // []byte: what the hostile responders answer
	replies  chan *nats.Msg // replies to the commands deliverCommand is given
	seq      atomic.Uint64
}

type fuzzPeer struct {
	s  *Session
	ft *fakeTransport
}

const (
	peerDevice = iota
	peerAdmin
	peerViewer
)

func newFuzzHub(f *testing.F) *fuzzHub {
	f.Helper()
	ns := natstest.Run(f)
	// Limits out of the way, so that inputs reach the decoders rather than
	// the rate limiters; the coalescer pushes every status at once.
	srv := startTestServer(f, natstest.Connect(f, ns), Config{
		CoalesceWindow: time.Nanosecond, CommandTimeout: 50 * time.Millisecond, ServiceTimeout: time.Second,
		StatusHistory: 5, EventHistory: 5,
		MessageRate: 1e9, MessageBurst: 1 << 30, AbuseBurst: 1 << 30,
		StatusRate: 1e9, StatusBurst: 1 << 30, EventRate: 1e9, EventBurst: 1 << 30, UrgentRate: 1e9, UrgentBurst: 1 << 30,
	})
	h := &fuzzHub{srv: srv, nc: natstest.Connect(f, ns), replies: make(chan *nats.Msg, 16)}
	h.reply.Store([]byte(`{"code":0,"msg":"","values":{}}`))
	respond := func(m *nats.Msg) { _ = m.Respond(h.reply.Load().([]byte)) }
	for _, subj := range []string{"hub.dev.fz-9.cmd", "hub.svc.fz.echo"} {
		if _, err := h.nc.Subscribe(subj, respond); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := h.nc.ChanSubscribe("fz.replies", h.replies); err != nil {
		f.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		f.Fatal(err)
	}
	return h
}

// peer returns a live session of the kind, opening a new one if the last
// was closed (replaced, kicked, closed for abuse).
func (h *fuzzHub) peer(t testing.TB, kind int) *fuzzPeer {
	if p := h.sessions[kind]; p != nil && p.ft.closeCode() == 0 {
		return p
	}
	var id *Identity
	switch kind {
	case peerDevice:
		id = device("fz-1", "dog", "g1")
	case peerAdmin:
		id = admin("fz-admin", "*")
	default:
		id = &Identity{Role: auth.RoleViewer, User: "fz-viewer", Groups: []string{"g1"}}
	}
	s, ft := attach(t, h.srv, 1<<20, id)
	p := &fuzzPeer{s: s, ft: ft}
	if kind != peerDevice {
		s.HandleFrame([]byte(`{"op":"request","service":"/admin/subscribe","request_id":"sub","args":{"all":true}}`))
		// A record of an earlier input may reach the new subscription
		// before its answer: only the answer is checked here.
		var answers []sentLine
		for _, l := range checkFrames(t, ft.take()) {
			if l.Op == "response" {
				answers = append(answers, l)
			}
		}
		if len(answers) != 1 || answers[0].Code != 0 {
			t.Fatalf("subscribe: %+v", answers)
		}
	}
	h.sessions[kind] = p
	return p
}

// drain checks every frame the sessions got so far and returns the lines
// of each.
func (h *fuzzHub) drain(t testing.TB) [3][]sentLine {
	t.Helper()
	var out [3][]sentLine
	for i, p := range h.sessions {
		if p != nil {
			out[i] = checkFrames(t, p.ft.take())
		}
	}
	return out
}

// settle waits, for a bounded time, until s has no request in flight: the
// answers of slow requests are then queued.
func settle(s *Session) { settleFor(s, time.Second) }

func settleFor(s *Session, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := s.inflight
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// awaitFrames waits, for a bounded time, until ft holds n frames.
func awaitFrames(ft *fakeTransport, n int) {
	deadline := time.Now().Add(5 * time.Second)
	for ft.count() < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
}

func (f *fakeTransport) take() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.frames
	f.frames = nil
	return out
}

// sentLine is one message the hub sent, as a client reads it.
type sentLine struct {
	Op        string          `json:"op"`
	Service   string          `json:"service"`
	ID        string          `json:"id"`
	RequestID string          `json:"request_id"`
	Code      int             `json:"code"`
	Msg       string          `json:"msg"`
	Result    bool            `json:"result"`
	Values    json.RawMessage `json:"values"`
	Args      json.RawMessage `json:"args"`
}

// envelopeFields are the fields of each kind of message, all required.
var envelopeFields = map[string][]string{
	wire.OpResponse: {"op", "service", "request_id", "code", "msg", "result", "values"},
	wire.OpPush:     {"op", "service", "id", "values"},
	wire.OpRequest:  {"op", "service", "request_id", "args"},
}

// checkFrames checks frames as a client reads them: newline-delimited
// messages, each checked by checkLine.
func checkFrames(t testing.TB, frames [][]byte) []sentLine {
	t.Helper()
	var out []sentLine
	for _, frame := range frames {
		for _, b := range bytes.Split(frame, []byte{'\n'}) {
			out = append(out, checkLine(t, b))
		}
	}
	return out
}

// checkLine checks one message the hub sent: valid JSON on one line, with
// exactly the fields of its op as the protocol has them, values and args
// objects, result true exactly for code 0, and service paths that map to
// subjects.
func checkLine(t testing.TB, b []byte) sentLine {
	t.Helper()
	if len(b) == 0 || !json.Valid(b) {
		t.Fatalf("hub sent %q: not a line of JSON", b)
	}
	var fields map[string]json.RawMessage
	var l sentLine
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatalf("hub sent %s: %v", b, err)
	}
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("hub sent %s: %v", b, err)
	}
	want, ok := envelopeFields[l.Op]
	if !ok || len(fields) != len(want) {
		t.Fatalf("hub sent %s: not a response, push or request", b)
	}
	for _, k := range want {
		if _, ok := fields[k]; !ok {
			t.Fatalf("hub sent %s: no %s", b, k)
		}
	}
	object := func(what string, raw json.RawMessage) {
		if !wire.IsObject(raw) {
			t.Fatalf("hub sent %s: %s is not an object", b, what)
		}
	}
	switch l.Op {
	case wire.OpResponse:
		if l.Result != (l.Code == wire.CodeOK) {
			t.Fatalf("hub sent %s: result disagrees with code", b)
		}
		object("values", l.Values)
	case wire.OpPush:
		if !subjects.ValidPath(l.Service) || l.ID == "" {
			t.Fatalf("hub sent %s: bad service or id", b)
		}
		object("values", l.Values)
	case wire.OpRequest:
		if !subjects.ValidPath(l.Service) || !strings.HasPrefix(l.RequestID, "hub-") {
			t.Fatalf("hub sent %s: bad service or request_id", b)
		}
		object("args", l.Args)
	}
	return l
}

// FuzzRequests sends client frames, one or several messages each, to a
// device, an admin, a viewer or a session not yet authenticated: the args
// of every service, each decoded by its handler. Whatever the frame, every
// message the hub sends any session is a valid one.
func FuzzRequests(f *testing.F) {
	h := newFuzzHub(f)
	req := func(service, rid, args string) string {
		return fmt.Sprintf(`{"op":"request","service":%q,"request_id":%q,"args":%s}`, service, rid, args)
	}
	now := time.Now().Unix()
	proof := fmt.Sprintf(`{"sn":"fz-5","ts":%d,"nonce":"fz-seed","sig":%q,"type":"cat"}`, now,
		auth.Sign(auth.DeviceKey([]byte("0123456789abcdef0123"), "fz-5"), "fz-5", now, "fz-seed"))
	seeds := []struct {
		peer  uint8
		frame string
	}{
		{peerDevice, req("/device/status", "1", `{"location":{"code":0,"msg":"ok"},"electricity":{"code":1,"msg":"low","percent":3},"sn":"x"}`)},
		{peerDevice, req("/device/status", "2", `{"location":{"code":"0"}}`)},
		{peerDevice, req("/device/event", "3", `{"event":"abnormal","priority":"emergency","data":{"k":1}}`)},
		{peerDevice, req("/device/event", "4", `{"event":"","priority":"low","data":[]}`)},
		{peerDevice, req("/ping", "5", `{}`) + "\n" + req("/auth/token", "6", `{"token":"x"}`) + "\r\n\n" + req("/cmd/x", "7", `{}`)},
		{peerDevice, `{"op":"response","request_id":"hub-1","code":0,"values":{"ok":true}}`},
		{peerDevice, req("/admin/devices", "8", `{}`)},
		{peerAdmin, req("/admin/subscribe", "9", `{"devices":["fz-1"],"types":["dog"],"groups":["g1"],"topics":["status","summary"],"min_priority":"high"}`)},
		{peerAdmin, req("/admin/unsubscribe", "10", `{"all":true,"topics":["event"]}`)},
		{peerAdmin, req("/admin/devices", "11", `{"type":"dog","group":"g1","online":true}`)},
		{peerAdmin, req("/admin/history", "12", `{"sn":"fz-1","topic":"status","limit":5}`)},
		{peerAdmin, req("/admin/history", "13", `{"sn":"fz-1","topic":"presence","limit":0}`)},
		{peerAdmin, req("/admin/command", "14", `{"sn":"fz-1","service":"/cmd/move","args":{"x":1},"timeout_ms":20}`)},
		{peerAdmin, req("/admin/command", "15", `{"sn":"fz-9","service":"/cmd/x"}`)},
		{peerAdmin, req("/admin/command", "16", `{"sn":"a.b","service":"cmd"}`)},
		{peerAdmin, req("/admin/push", "17", `{"target":{"sn":"fz-1"},"service":"/push/x","values":{"a":1},"where":{"type":"dog"}}`)},
		{peerAdmin, req("/admin/push", "18", `{"target":{"all":true},"service":"/push/x"}`)},
		{peerAdmin, req("/admin/push", "19", `{"target":{"role":"root"},"service":"/push/x"}`)},
		{peerAdmin, req("/fz/echo", "20", `{"q":1}`)},
		{peerAdmin, req("/nobody/home", "21", `{}`)},
		{peerViewer, req("/admin/push", "22", `{"target":{"all":true},"service":"/push/x"}`)},
		{peerViewer, req("/admin/history", "23", `{"sn":"fz-2","topic":"event"}`)},
		{peerViewer, req("/admin/subscribe", "24", `{"groups":["g2"]}`)},
		{3, req("/auth/login", "25", `{"username":"admin","password":"pw"}`) + "\n" + req("/admin/devices", "26", `{}`)},
		{3, req("/auth/login", "27", `{"username":"admin","password":"nope"}`)},
		{3, req("/auth/token", "28", `{"token":"eyJhbGciOiJIUzI1NiJ9.e30."}`)},
		{3, req("/auth/device", "29", `{"sn":"fz-5","ts":1,"nonce":"n","sig":"00"}`)},
		{3, req("/auth/device", "30", proof)},
		{3, req("/ping", "31", `{}`)},
		{3, `{"op":"request"}` + "\n" + `[1]` + "\n" + "\xff" + "\n" + `{"op":"response","request_id":"r"}`},
	}
	for _, s := range seeds {
		f.Add(s.peer, []byte(s.frame))
	}
	f.Fuzz(func(t *testing.T, who uint8, frame []byte) {
		kind := int(who % 4)
		var s *Session
		var ft *fakeTransport
		if kind == 3 {
			ft = &fakeTransport{limit: 1 << 20}
			s = h.srv.Open(ft, "fz")
			ft.mu.Lock()
			ft.sess = s
			ft.mu.Unlock()
			defer s.Close(wire.CloseRestart, "done")
		} else {
			p := h.peer(t, kind)
			s, ft = p.s, p.ft
		}
		s.HandleFrame(frame)
		settle(s)
		lines := checkFrames(t, ft.take())
		h.drain(t)
		// No service answers success to a role it is not for, nor to a
		// session that is not authenticated (an identity, once set, stays:
		// the one the session ends with is the one it had when it was
		// answered, if it had one). A session authenticates once.
		var role auth.Role
		if id := s.Identity(); id != nil {
			role = id.Role
		}
		auths := 0
		for _, l := range lines {
			if l.Op != wire.OpResponse || l.Code != wire.CodeOK {
				continue
			}
			switch allowed, ok := serviceRoles[l.Service]; {
			case isAuthService(l.Service):
				if auths++; kind != 3 || auths > 1 {
					t.Fatalf("authenticated twice: %+v", l)
				}
			case role == "":
				t.Fatalf("%s answered an unauthenticated session: %+v", l.Service, l)
			case ok && !slices.Contains(allowed, role):
				t.Fatalf("%s answered success to a %s", l.Service, role)
			}
		}
	})
}

// serviceRoles are the roles the protocol lets call each service the hub
// serves itself (/ping: any).
var serviceRoles = map[string][]auth.Role{
	"/device/status":     {auth.RoleDevice},
	"/device/event":      {auth.RoleDevice},
	"/admin/subscribe":   {auth.RoleAdmin, auth.RoleViewer},
	"/admin/unsubscribe": {auth.RoleAdmin, auth.RoleViewer},
	"/admin/devices":     {auth.RoleAdmin, auth.RoleViewer},
	"/admin/history":     {auth.RoleAdmin, auth.RoleViewer},
	"/admin/command":     {auth.RoleAdmin},
	"/admin/push":        {auth.RoleAdmin},
}

// FuzzBusMessages hands the hub bodies as any publisher on the bus may
// send them: pushes on push subjects, commands on a device's cmd subject,
// the replies of a device's holder and of a backend service, takeover
// announcements (signed, as a node's: control_test.go covers unsigned ones). Accepted pushes reach exactly their audience as valid
// frames, refused ones nobody; every command gets a valid reply; every
// relayed reply is a valid response.
func FuzzBusMessages(f *testing.F) {
	h := newFuzzHub(f)
	for _, seed := range []struct {
		kind uint8
		data string
	}{
		{0, `{"service":"/push/x","values":{"a":[1,2]}}`},
		{0, `{"service":"/push/x","values":{"a":1},"where":{"type":"dog","group":"g1"},"id":"p1"}`},
		{0, `{"service":"/push/x","where":{"type":"cat"}}`},
		{0, `{"service":"/push/x","where":{"planet":"mars"}}`},
		{0, `{"service":"push","values":{}}`},
		{1, `{"service":"/push/all","values":"not an object"}`},
		{1, `{"service":"/push/all","values":{"k":"\u2028"},"where":{"role":"admin"}}`},
		{2, `{"service":"/push/u","id":"` + strings.Repeat("i", 129) + `"}`},
		{3, `{"service":"/push/g","where":{"sn":"a.b"}}`},
		{3, `not json`},
		{4, `{"service":"/cmd/move","args":{"x":1}}`},
		{4, `{"service":"/cmd/move"}`},
		{4, `{"service":"/cmd/move","args":[1]}`},
		{4, `{"service":"cmd"}`},
		{4, `{"args":{}}`},
		{4, `[]`},
		{5, `{"code":0,"msg":"","values":{"pos":[1,2]}}`},
		{5, `{"code":409,"msg":"busy","values":{"why":"x"}}`},
		{5, `{"code":"0"}`},
		{5, `garbage`},
		{6, `{"code":0,"msg":"","values":{"echo":1}}`},
		{6, `{"code":0,"values":5}`},
		{6, `{"code":404,"msg":"nope"}`},
		{7, `{"sn":"fz-1","session":"zzzz","node":"other","at_ns":9223372036854775807}`},
		{7, `{"sn":"fz-1","session":"","at_ns":0}`},
		{7, `{"sn":"a.b"}`},
	} {
		f.Add(seed.kind, []byte(seed.data))
	}
	pushSubjects := []struct {
		subject string
		to      []int
	}{
		{"hub.dev.fz-1.push", []int{peerDevice}},
		{"hub.all.push", []int{peerDevice, peerAdmin, peerViewer}},
		{"hub.user.fz-admin.push", []int{peerAdmin}},
		{"hub.group.g1.push", []int{peerDevice, peerViewer}},
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		dev, adm := h.peer(t, peerDevice), h.peer(t, peerAdmin)
		h.peer(t, peerViewer)
		switch kind % 8 {
		case 0, 1, 2, 3:
			ps := pushSubjects[kind%8]
			h.srv.dispatch(&nats.Msg{Subject: ps.subject, Data: data, Header: nats.Header{}})
			var body schema.PushBody
			accepted := json.Unmarshal(data, &body) == nil && body.Check() == nil
			got := h.drain(t)
			for i, lines := range got {
				to := false
				for _, j := range ps.to {
					to = to || i == j
				}
				switch {
				case !accepted || !to:
					if len(lines) != 0 {
						t.Fatalf("body %q on %s (accepted %v) reached session %d: %+v", data, ps.subject, accepted, i, lines)
					}
				case len(body.Where) == 0 && len(lines) != 1, len(lines) > 1:
					t.Fatalf("body %q on %s: session %d got %d frames", data, ps.subject, i, len(lines))
				case len(lines) == 1:
					l := lines[0]
					if l.Op != wire.OpPush || l.Service != body.Service || (body.ID != "" && l.ID != body.ID) || !sameValues(l.Values, body.Values) {
						t.Fatalf("body %q on %s delivered as %+v", data, ps.subject, l)
					}
				}
			}
		case 4:
			h.command(t, dev, data)
		case 5, 6:
			h.reply.Store(bytes.Clone(data))
			service, args := "/admin/command", `{"sn":"fz-9","service":"/cmd/x","timeout_ms":5000}`
			if kind%8 == 6 {
				service, args = "/fz/echo", `{}`
			}
			adm.s.HandleFrame([]byte(`{"op":"request","service":"` + service + `","request_id":"r","args":` + args + `}`))
			settleFor(adm.s, 10*time.Second)
			got := h.drain(t)[peerAdmin]
			if len(got) != 1 || got[0].RequestID != "r" {
				t.Fatalf("reply %q relayed as %+v", data, got)
			}
			var r schema.Reply
			if json.Unmarshal(data, &r) == nil && r.Code == wire.CodeOK && wire.IsObject(r.Values) &&
				(got[0].Code != wire.CodeOK || !sameValues(got[0].Values, r.Values)) {
				t.Fatalf("reply %q relayed as %+v", data, got[0])
			}
		case 7:
			before := dev.s.id
			h.srv.onTakeover(h.srv.ctl.message(subjects.Takeover, data)) // as a node sends it
			h.drain(t)
			if dev.ft.closeCode() != 0 {
				var tk takeover
				if json.Unmarshal(data, &tk) != nil || tk.SN != "fz-1" || tk.Session == before {
					t.Fatalf("takeover %q closed fz-1", data)
				}
			}
		}
	})
}

// command hands deliverCommand a request on fz-1's cmd subject, answers it
// as the device if it gets there, and checks the reply the requester gets.
func (h *fuzzHub) command(t *testing.T, dev *fuzzPeer, data []byte) {
	// A long holder's timeout: the device answers at once, however slow
	// the box.
	m := &nats.Msg{Subject: "hub.dev.fz-1.cmd", Reply: "fz.replies", Data: data, Header: nats.Header{schema.HeaderTimeoutMS: {"10000"}}}
	h.srv.deliverCommand("fz-1", m)
	var body schema.CommandBody
	accepted := json.Unmarshal(data, &body) == nil && subjects.ValidPath(body.Service) &&
		(wire.IsNull(body.Args) || wire.IsObject(body.Args))
	sent := h.drain(t)[peerDevice]
	if accepted != (len(sent) == 1) || len(sent) > 1 {
		t.Fatalf("command %q (accepted %v) reached the device as %+v", data, accepted, sent)
	}
	if accepted {
		l := sent[0]
		if l.Op != wire.OpRequest || l.Service != body.Service || !sameValues(l.Args, body.Args) {
			t.Fatalf("command %q sent as %+v", data, l)
		}
		dev.s.HandleFrame([]byte(`{"op":"response","request_id":"` + l.RequestID + `","code":0,"values":{"done":true}}`))
	}
	var r schema.Reply
	select {
	case m := <-h.replies:
		if err := json.Unmarshal(m.Data, &r); err != nil || !wire.IsObject(r.Values) {
			t.Fatalf("command %q: reply %q", data, m.Data)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("command %q: no reply", data)
	}
	if (r.Code == wire.CodeOK) != accepted {
		t.Fatalf("command %q (accepted %v): reply %+v", data, accepted, r)
	}
}

// FuzzRecords hands the hub records as any publisher on the bus may send
// them on a watch subject, and as any writer of the streams may store
// them: status, event and presence records. A record on a watch subject
// that the hub could have written (a serial number, a status or data
// object, a known priority or reason) and that is the one its subject
// names reaches each subscriber that may see it exactly once, as a push of
// the record itself; any other reaches nobody. A record stored on a stream
// by another writer reaches nobody live (the node follows no stream) and
// is read back by /admin/history as an object or not at all.
func FuzzRecords(f *testing.F) {
	h := newFuzzHub(f)
	// Records stored on the streams are about fz-7, whose history an admin
	// then reads.
	js, err := jetstream.New(h.nc)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := h.srv.registry.kv.Put(context.Background(), "fz-7", []byte(`{"type":"dog","group":"g1"}`)); err != nil {
		f.Fatal(err)
	}
	natstest.Eventually(f, 5*time.Second, func() error {
		if _, ok := h.srv.registry.get("fz-7"); !ok {
			return fmt.Errorf("fz-7 not registered yet")
		}
		return nil
	})
	for _, seed := range []struct {
		kind uint8
		data string
	}{
		{0, `{"sn":"fz-1","type":"dog","group":"g1","at":1,"status":{"location":{"code":0,"msg":"ok"}}}`},
		{0, `{"sn":"fz-2","type":"cat","group":"g2","at":2,"status":{}}`},
		{0, `{"sn":"","status":{}}`},
		{0, `null`},
		{1, `{"sn":"fz-1","type":"dog","group":"g1","at":1,"event":"abnormal","priority":"emergency","data":{"k":1}}`},
		{2, `{"sn":"fz-1","type":"dog","group":"g1","online":true,"reason":"connected","node":"n","at":1}`},
		{2, `{"sn":"fz-4","type":"dog","group":"g2","online":false,"reason":"node_lost","node":"n","at":2}`},
		{3, `{"sn":"fz-1","type":"dog","group":"g1","at":1,"status":{}}`},
		{4, `{"sn":"fz-1","type":"cat","group":"g1","at":1,"event":"e","priority":"normal","data":{}}`},
		{5, `{"sn":"fz-4","type":"dog","group":"g2","online":false,"reason":"node_lost","node":"n","at":2}`},
		{6, `{"sn":"fz-7","type":"dog","group":"g1","at":3,"status":{"rubbish":{"code":1,"msg":"full"}}}`},
		{7, `{"sn":"fz-7","type":"dog","group":"g1","at":4,"event":"threshold","priority":"high","data":{}}`},
		{8, `{"sn":"fz-7","type":"dog","group":"g1","online":false,"reason":"closed","node":"n","at":5}`},
	} {
		f.Add(seed.kind, []byte(seed.data))
	}
	topics := [...]struct{ name, subject string }{
		{"status", "hub.dev.fz-7.status"}, {"event", "hub.dev.fz-7.event"}, {"presence", "hub.presence.fz-7"},
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		adm, view := h.peer(t, peerAdmin), h.peer(t, peerViewer)
		// Kinds 0 to 2 come on the watch subject their record names (when
		// it names one), 3 to 5 on fz-1's subject in g1 of type dog, and
		// 6 to 8 are stored on the stream and read back by /admin/history.
		how := kind % 9 / 3
		topic := topics[kind%3]
		var rec struct {
			SN    string `json:"sn"`
			Type  string `json:"type"`
			Group string `json:"group"`
		}
		var valid bool
		var service string
		switch kind % 3 {
		case 0:
			var r StatusRecord
			valid = json.Unmarshal(data, &r) == nil && auth.ValidSerial(r.SN) && wire.IsObject(r.Status)
			service = "/push/status"
		case 1:
			var r EventRecord
			valid = json.Unmarshal(data, &r) == nil && auth.ValidSerial(r.SN) && wire.IsObject(r.Data)
			_, known := priorities[r.Priority]
			valid = valid && known
			service = "/push/event"
		case 2:
			var r PresenceRecord
			valid = json.Unmarshal(data, &r) == nil && auth.ValidSerial(r.SN)
			switch r.Reason {
			case ReasonConnected, ReasonNodeLost, ReasonClosed, schema.ReasonTimeout, ReasonReplaced, schema.ReasonKicked:
			default:
				valid = false
			}
			service = "/push/presence"
		}
		_ = json.Unmarshal(data, &rec)
		switch how {
		case 0, 1:
			subj := "hub.watch.g1.dog.fz-1." + topic.name
			if s, err := subjects.Watch(rec.Group, rec.Type, rec.SN, topic.name); err == nil && how == 0 {
				subj = s
			}
			valid = valid && subj == mustWatch(rec.Group, rec.Type, rec.SN, topic.name)
			h.srv.onWatch(&nats.Msg{Subject: subj, Data: data})
		case 2:
			valid = false
			if _, err := js.Publish(context.Background(), topic.subject, data); err != nil {
				t.Fatalf("store %q: %v", data, err)
			}
			defer h.history(t, adm, topic.name, data)
		}
		if valid {
			// A status may be pushed by the coalescer's timer.
			awaitFrames(adm.ft, 1)
			if rec.Group == "g1" {
				awaitFrames(view.ft, 1)
			}
		}
		got := h.drain(t)
		for _, p := range []int{peerAdmin, peerViewer} {
			want := 0
			if valid && (p == peerAdmin || rec.Group == "g1") {
				want = 1
			}
			if len(got[p]) != want {
				t.Fatalf("record %q (valid %v, group %q): session %d got %+v", data, valid, rec.Group, p, got[p])
			}
			if want == 1 && (got[p][0].Service != service || !sameValues(got[p][0].Values, data)) {
				t.Fatalf("record %q pushed as %+v", data, got[p][0])
			}
		}
	})
}

// mustWatch is the watch subject of a record, or "" when it has none.
func mustWatch(group, typ, sn, topic string) string {
	s, _ := subjects.Watch(group, typ, sn, topic)
	return s
}

// history reads fz-7's newest record of topic back as an admin and checks
// the answer: a list of objects, the newest first, data itself when it is
// one.
func (h *fuzzHub) history(t *testing.T, adm *fuzzPeer, topic string, data []byte) {
	t.Helper()
	rid := fmt.Sprintf("h%d", h.seq.Add(1))
	adm.s.HandleFrame([]byte(`{"op":"request","service":"/admin/history","request_id":"` + rid + `","args":{"sn":"fz-7","topic":"` + topic + `","limit":1}}`))
	settleFor(adm.s, 10*time.Second) // a read is bounded by 5 s
	var answer *sentLine
	for _, l := range h.drain(t)[peerAdmin] {
		if l.Op == wire.OpResponse && l.RequestID == rid {
			answer = &l
		}
	}
	switch {
	case answer == nil:
		t.Fatalf("history after storing %q: no answer", data)
	case answer.Code == wire.CodeUnavailable:
		return // a read that failed (a slow JetStream), not a decoder's doing
	case answer.Code != wire.CodeOK:
		t.Fatalf("history after storing %q: %+v", data, answer)
	}
	var v struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(answer.Values, &v); err != nil || v.Records == nil || len(v.Records) > 1 {
		t.Fatalf("history after storing %q answered %s", data, answer.Values)
	}
	for _, r := range v.Records {
		if !wire.IsObject(r) {
			t.Fatalf("history after storing %q holds %s", data, r)
		}
	}
	if json.Valid(data) && wire.IsObject(data) && (len(v.Records) != 1 || !sameValues(v.Records[0], data)) {
		t.Fatalf("history after storing %q answered %s", data, answer.Values)
	}
}

// FuzzKVEntries hands the bucket watchers entries as any writer of the
// buckets may put them: device registry and user entries (node liveness
// entries are fuzzed in hub/presence).
// A registry entry the node keeps never stops its device from logging in,
// and a user entry it keeps is an account that can get a token.
func FuzzKVEntries(f *testing.F) {
	h := newFuzzHub(f)
	hash, err := auth.HashPassword("pw", 4)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct {
		kind uint8
		data string
	}{
		{0, `{"type":"dog","group":"g1"}`},
		{0, `{"type":"dog","group":"g2"}`},
		{0, `{"type":"","group":""}`},
		{0, `{"type":7}`},
		{1, `{"name":"fz-user","role":"admin","groups":["*"],"password_hash":"` + hash + `","updated_at":1}`},
		{1, `{"name":"fz-user","role":"viewer","groups":["g1","g2"],"password_hash":"x","updated_at":2}`},
	} {
		f.Add(seed.kind, []byte(seed.data))
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		switch kind % 2 {
		case 0:
			h.srv.registry.apply(h.srv, kvEntry{bucket: schema.BucketDevices, key: "fz-2", value: data, op: jetstream.KeyValuePut}, true)
			d, registered := h.srv.registry.get("fz-2")
			// A device whose entry the node keeps logs in with it.
			h.deviceLogin(t, "fz-2", registered, d)
		case 1:
			h.srv.users.apply(h.srv, kvEntry{bucket: schema.BucketUsers, key: "fz-user", value: data, op: jetstream.KeyValuePut}, true)
			if u, ok := h.srv.users.get("fz-user"); ok {
				if err := u.Validate(); err != nil {
					t.Fatalf("user entry %q kept: %v", data, err)
				}
				if _, _, err := h.srv.tokens.Issue(u.Name, u.Role, u.Groups, u.UpdatedAt); err != nil {
					t.Fatalf("user entry %q kept, yet no token: %v", data, err)
				}
			}
		}
	})
}

// deviceLogin authenticates sn with a valid proof on a new session and
// checks it gets in, with the type and group of its registry entry.
func (h *fuzzHub) deviceLogin(t *testing.T, sn string, registered bool, d schema.Device) {
	t.Helper()
	ft := &fakeTransport{limit: 1 << 10}
	s := h.srv.Open(ft, "fz")
	ft.mu.Lock()
	ft.sess = s
	ft.mu.Unlock()
	defer s.Close(wire.CloseRestart, "done")
	ts, nonce := time.Now().Unix(), fmt.Sprintf("fz-%d-%d", time.Now().UnixNano(), h.seq.Add(1))
	sig := auth.Sign(auth.DeviceKey([]byte("0123456789abcdef0123"), sn), sn, ts, nonce)
	s.HandleFrame(fmt.Appendf(nil, `{"op":"request","service":"/auth/device","request_id":"a","args":{"sn":%q,"ts":%d,"nonce":%q,"sig":%q,"type":"cat"}}`, sn, ts, nonce, sig))
	lines := checkFrames(t, ft.take())
	if len(lines) == 1 && lines[0].Code == wire.CodeUnavailable {
		return // presence store slow to answer: not the entry's doing
	}
	if len(lines) != 1 || lines[0].Code != wire.CodeOK {
		t.Fatalf("registry entry %+v (kept %v): device login answered %+v", d, registered, lines)
	}
	var v authValues
	if err := json.Unmarshal(lines[0].Values, &v); err != nil {
		t.Fatal(err)
	}
	if registered && (v.Type != d.Type || v.Group != d.Group) {
		t.Fatalf("registry entry %+v: device logged in as %s/%s", d, v.Type, v.Group)
	}
}
