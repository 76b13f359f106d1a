package bustest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/bustest"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// callWait bounds a JetStream call. One the server refuses does not wait
// that long: the server drops a publish it refuses and says so
// asynchronously, and guard ends the call then.
const callWait = 10 * time.Second

// fleet is a hub of two nodes on the shipped configuration, a device on
// node A (R-1, unregistered: group "default"), a registry entry (R-reg),
// and a connection per role.
type fleet struct {
	bus    *bustest.Bus
	a, b   *hubtest.Node
	dev    *hubtest.Client // R-1 on node A
	conns  map[bustest.Role]*bustest.Conn
	nodeJS jetstream.JetStream // a node's own view, to check the state
}

func startFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{bus: bustest.Start(t), conns: make(map[bustest.Role]*bustest.Conn)}
	f.a = hubtest.StartNodeOn(t, f.bus.Connect(t, bustest.RoleNode).Conn, "node-a")
	f.b = hubtest.StartNodeOn(t, f.bus.Connect(t, bustest.RoleNode).Conn, "node-b")
	for _, r := range []bustest.Role{bustest.RoleNode, bustest.RoleBackend, bustest.RoleOperator} {
		f.conns[r] = f.bus.Connect(t, r)
	}
	var err error
	if f.nodeJS, err = jetstream.New(f.conns[bustest.RoleNode].Conn); err != nil {
		t.Fatal(err)
	}
	hubtest.PutDevice(t, f.conns[bustest.RoleNode].Conn, "R-reg", "robot", "g1")
	f.dev = hubtest.Device(t, f.a, "R-1", "robot")
	f.dev.MustOK("/device/status", map[string]any{"location": map[string]any{"code": 0, "msg": "dock"}})
	f.dev.MustOK("/device/event", map[string]any{"event": "abnormal", "priority": "normal", "data": map[string]any{}})
	// The device is online, its records stored.
	natstest.Eventually(t, 10*time.Second, func() error {
		for _, subj := range []string{"hub.presence.R-1", "hub.dev.R-1.status", "hub.dev.R-1.event"} {
			if _, err := f.lastMsg(subj); err != nil {
				return fmt.Errorf("%s: %w", subj, err)
			}
		}
		_, err := f.nodeKV(t, schema.BucketPresence).Get(ctx(t), "R-1")
		return err
	})
	return f
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func (f *fleet) nodeKV(t *testing.T, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := f.nodeJS.KeyValue(ctx(t), bucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	return kv
}

// lastMsg is the last stored message on subj, read by a node.
func (f *fleet) lastMsg(subj string) (*jetstream.RawStreamMsg, error) {
	stream := map[string]string{"presence": schema.StreamPresence, "status": schema.StreamStatus, "event": schema.StreamEvents}
	name := stream[subj[strings.LastIndex(subj, ".")+1:]]
	if strings.HasPrefix(subj, "hub.presence.") {
		name = schema.StreamPresence
	}
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := f.nodeJS.Stream(c, name)
	if err != nil {
		return nil, err
	}
	return s.GetLastMsgForSubject(c, subj)
}

// refusedPublish waits until the server has told c that its publish on
// subj was refused.
func refusedPublish(c *bustest.Conn, subj string) error {
	err := waitFor(callWait, func() error {
		if c.Errors.Has(`Publish to "` + subj + `"`) {
			return nil
		}
		return fmt.Errorf("no permission error for a publish to %s (errors: %v)", subj, c.Errors.All())
	})
	if err != nil {
		return err
	}
	return fmt.Errorf("publish to %s: %w", subj, nats.ErrPermissionViolation)
}

func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscribe subscribes c to subj and reports whether the server accepted
// it: a refused subscription's NextMsg returns the permission error.
func subscribe(c *bustest.Conn, subj, queue string) (*nats.Subscription, error) {
	var sub *nats.Subscription
	var err error
	if queue != "" {
		sub, err = c.QueueSubscribeSync(subj, queue)
	} else {
		sub, err = c.SubscribeSync(subj)
	}
	if err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	// The server answers a refused SUB before the flush's PONG, and
	// nats.go marks the subscription as it reads the answer: by now a
	// refused one says so.
	if _, err := sub.NextMsg(time.Millisecond); errors.Is(err, nats.ErrPermissionViolation) {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscription to %s refused: %w", subj, err)
	}
	return sub, nil
}

// guard runs f with a context that ends when the server refuses one of
// c's publishes (or after callWait), and adds the refusal to f's error.
func guard(c *bustest.Conn, f func(ctx context.Context) error) error {
	n := len(c.Errors.All())
	ctx, cancel := context.WithTimeout(context.Background(), callWait)
	defer cancel()
	refused := func() []string {
		var out []string
		for _, e := range c.Errors.All()[n:] {
			if strings.Contains(e, "Permissions Violation for Publish") {
				out = append(out, e)
			}
		}
		return out
	}
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if len(refused()) > 0 {
					cancel()
					return
				}
			}
		}
	}()
	err := f(ctx)
	close(done)
	<-watched
	if r := refused(); len(r) > 0 {
		return errors.Join(err, fmt.Errorf("%s: %w", strings.Join(r, "; "), nats.ErrPermissionViolation))
	}
	return err
}

// kvWrite writes to a bucket as c, the way nats.go's KV does: a put, or a
// delete or purge marker. It goes through the KV API when c may open the
// bucket, else it publishes the same message.
func kvWrite(t *testing.T, c *bustest.Conn, bucket, key, op string, value []byte) error {
	t.Helper()
	js, err := jetstream.New(c.Conn)
	if err != nil {
		return err
	}
	var kv jetstream.KeyValue
	if err := guard(c, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, bucket)
		return err
	}); err != nil {
		t.Logf("bucket %s not opened (%v): publishing the write", bucket, err)
		m := nats.NewMsg("$KV." + bucket + "." + key)
		m.Data = value
		switch op {
		case "delete":
			m.Header.Set("KV-Operation", "DEL")
		case "purge":
			m.Header.Set("KV-Operation", "PURGE")
			m.Header.Set("Nats-Rollup", "sub")
		}
		return guard(c, func(ctx context.Context) error {
			_, err := js.PublishMsg(ctx, m)
			return err
		})
	}
	return guard(c, func(ctx context.Context) error {
		switch op {
		case "put":
			_, err = kv.Put(ctx, key, value)
		case "delete":
			err = kv.Delete(ctx, key)
		case "purge":
			err = kv.Purge(ctx, key)
		}
		return err
	})
}

// A row is one permission: what a role tries, which roles may, which may
// not, and what must still hold after a refusal.
type row struct {
	name    string
	allowed []bustest.Role
	refused []bustest.Role
	// try does it as c, and returns nil when it took effect.
	try func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error
	// unchanged checks the state after a refused try.
	unchanged func(t *testing.T, f *fleet, tag string)
}

var (
	node     = bustest.RoleNode
	backend  = bustest.RoleBackend
	operator = bustest.RoleOperator
)

func pushRow(name, subject string) row {
	return row{
		name:    "push " + name,
		allowed: []bustest.Role{node, backend, operator},
		try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
			service := "/push/" + tag
			b, _ := json.Marshal(schema.PushBody{Service: service, Values: json.RawMessage(`{}`)})
			if err := c.Publish(subject, b); err != nil {
				return err
			}
			if _, ok := f.dev.TryPush(service, 5*time.Second); !ok {
				return fmt.Errorf("push on %s not delivered", subject)
			}
			return nil
		},
	}
}

// kvWriteRow tries a put, a delete and a purge in bucket: of key by the
// refused roles, of a key of its own by the allowed ones.
func kvWriteRow(bucket, key string, allowed, refused []bustest.Role, value func(tag string) []byte, unchanged func(t *testing.T, f *fleet, tag string)) []row {
	var rows []row
	for _, op := range []string{"put", "delete", "purge"} {
		rows = append(rows, row{
			name: "write " + bucket + " (" + op + ")", allowed: allowed, refused: refused,
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				k := key
				if slices.Contains(allowed, c.Role) || k == "" {
					k = "k-" + tag
				}
				return kvWrite(t, c, bucket, k, op, value(tag))
			},
			unchanged: unchanged,
		})
	}
	return rows
}

func TestBusAttacksRefused(t *testing.T) {
	f := startFleet(t)
	admin, err := f.nodeKV(t, schema.BucketUsers).Get(ctx(t), "admin")
	if err != nil {
		t.Fatal(err)
	}
	adminOnly := func(t *testing.T, f *fleet, tag string) {
		t.Helper()
		kv := f.nodeKV(t, schema.BucketUsers)
		e, err := kv.Get(ctx(t), "admin")
		if err != nil || e.Revision() != admin.Revision() {
			t.Fatalf("admin entry now %v (%v), was revision %d", e, err, admin.Revision())
		}
		for _, k := range []string{"k-" + tag, "u-" + tag, "evil"} {
			if _, err := kv.Get(ctx(t), k); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("hub_users key %s: %v", k, err)
			}
		}
		// The admin's password is unchanged: the admin still logs in;
		// the super-admin an attacker would have written does not.
		hubtest.Admin(t, f.a, "admin", hubtest.AdminPassword).Conn.Close()
		c := hubtest.Dial(t, f.a.WSURL(), nil)
		defer c.Conn.Close()
		if r := c.Request("/auth/login", map[string]any{"username": "evil", "password": "evil-pw"}); r.Code == 0 {
			t.Fatalf("evil logged in: %s", r.Raw)
		}
	}
	presenceUnchanged := func(t *testing.T, f *fleet, _ string) {
		t.Helper()
		e, err := f.nodeKV(t, schema.BucketPresence).Get(ctx(t), "R-1")
		if err != nil {
			t.Fatalf("presence of R-1: %v", err)
		}
		var p schema.PresenceEntry
		if err := json.Unmarshal(e.Value(), &p); err != nil || p.Node != "node-a" {
			t.Fatalf("presence of R-1 now %s (%v)", e.Value(), err)
		}
		f.dev.MustOK("/ping", nil)
	}
	userValue := func(tag string) []byte {
		hash, _ := auth.HashPassword("evil-pw", 4)
		b, _ := json.Marshal(auth.User{Name: "evil", Role: auth.RoleAdmin, Groups: []string{"*"}, PasswordHash: hash, UpdatedAt: time.Now().UnixMilli()})
		return b
	}

	rows := []row{
		pushRow("to a device", "hub.dev.R-1.push"),
		pushRow("to a type", "hub.type.robot.push"),
		pushRow("to a group", "hub.group.default.push"),
		pushRow("to a role", "hub.role.device.push"),
		pushRow("to every session", "hub.all.push"),
		{
			name: "command a device", allowed: []bustest.Role{backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				service := "/cmd/" + tag
				done := make(chan struct{})
				go func() {
					defer close(done)
					req := f.dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == service })
					f.dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{"by":"` + tag + `"}}`)
				}()
				defer func() { <-done }()
				b, _ := json.Marshal(schema.CommandBody{Service: service, Args: json.RawMessage(`{}`)})
				m, err := c.Request("hub.dev.R-1.cmd", b, 5*time.Second)
				if err != nil {
					return err
				}
				var r schema.Reply
				if err := json.Unmarshal(m.Data, &r); err != nil || r.Code != 0 || !strings.Contains(string(r.Values), tag) {
					return fmt.Errorf("answer %s (%v)", m.Data, err)
				}
				return nil
			},
		},
		{
			name: "serve a backend service", allowed: []bustest.Role{backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				sub, err := c.QueueSubscribe("hub.svc.echo."+tag, "echo", func(m *nats.Msg) {
					_ = m.Respond([]byte(`{"code":0,"msg":"","values":{"by":"` + tag + `"}}`))
				})
				if err != nil {
					return err
				}
				defer func() { _ = sub.Unsubscribe() }()
				if err := c.Flush(); err != nil {
					return err
				}
				r := f.dev.Request("/echo/"+tag, map[string]any{})
				if r.Code != 0 || !strings.Contains(string(r.Values), tag) {
					return fmt.Errorf("service answered %s", r.Raw)
				}
				return nil
			},
		},
		{
			name: "follow status, event and presence records", allowed: []bustest.Role{node, backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				var subs []*nats.Subscription
				for _, subj := range []string{"hub.dev.*.status", "hub.dev.*.event", "hub.presence.*"} {
					sub, err := subscribe(c, subj, "")
					if err != nil {
						return err
					}
					defer func() { _ = sub.Unsubscribe() }()
					subs = append(subs, sub)
				}
				sn := "R-rec-" + tag
				d := hubtest.Device(t, f.b, sn, "robot")
				defer d.Conn.Close()
				d.MustOK("/device/status", map[string]any{})
				d.MustOK("/device/event", map[string]any{"event": "abnormal", "priority": "normal", "data": map[string]any{}})
				for i, want := range []string{"hub.dev." + sn + ".status", "hub.dev." + sn + ".event", "hub.presence." + sn} {
					for {
						m, err := subs[i].NextMsg(5 * time.Second)
						if err != nil {
							return fmt.Errorf("waiting for %s: %w", want, err)
						}
						if m.Subject == want {
							break
						}
					}
				}
				return nil
			},
		},
		{
			// A record a node stores is a JetStream publish: its reply
			// subject is the node's acknowledgement inbox, and everyone
			// following the records sees it. Answering it first would
			// forge the acknowledgement (a record reported stored, or
			// refused, whatever the stream said).
			name: "answer the acknowledgement inbox of a record", allowed: []bustest.Role{node}, refused: []bustest.Role{backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				sub, err := subscribe(c, "hub.dev.*.status", "")
				if err != nil {
					return err
				}
				defer func() { _ = sub.Unsubscribe() }()
				sn := "R-ack-" + tag
				d := hubtest.Device(t, f.b, sn, "robot")
				defer d.Conn.Close()
				d.MustOK("/device/status", map[string]any{})
				for {
					m, err := sub.NextMsg(5 * time.Second)
					if err != nil {
						return fmt.Errorf("waiting for the status record: %w", err)
					}
					if m.Subject != "hub.dev."+sn+".status" {
						continue
					}
					if m.Reply == "" {
						return fmt.Errorf("the record carries no reply subject")
					}
					if err := c.Publish(m.Reply, []byte(`{"stream":"HUB_STATUS","seq":1}`)); err != nil {
						return err
					}
					if err := c.Flush(); err != nil {
						return err
					}
					if c.Errors.Has(`Publish to "` + m.Reply + `"`) {
						return refusedPublish(c, m.Reply)
					}
					// Allowed unless the server reports the violation
					// within the wait: a refused publish is reported
					// asynchronously.
					if err := waitFor(time.Second, func() error {
						if c.Errors.Has(`Publish to "` + m.Reply + `"`) {
							return nil
						}
						return fmt.Errorf("not refused")
					}); err == nil {
						return refusedPublish(c, m.Reply)
					}
					return nil
				}
			},
		},
		{
			name: "read hub_presence and hub_devices", allowed: []bustest.Role{node, backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				js, _ := jetstream.New(c.Conn)
				cx := ctx(t)
				for _, bucket := range []string{schema.BucketPresence, schema.BucketDevices} {
					kv, err := js.KeyValue(cx, bucket)
					if err != nil {
						return fmt.Errorf("open %s: %w", bucket, err)
					}
					key := map[string]string{schema.BucketPresence: "R-1", schema.BucketDevices: "R-reg"}[bucket]
					if _, err := kv.Get(cx, key); err != nil {
						return fmt.Errorf("get %s %s: %w", bucket, key, err)
					}
					keys, err := kv.Keys(cx)
					if err != nil || len(keys) == 0 {
						return fmt.Errorf("keys of %s: %v %w", bucket, keys, err)
					}
					w, err := kv.WatchAll(cx)
					if err != nil {
						return fmt.Errorf("watch %s: %w", bucket, err)
					}
					select {
					case e := <-w.Updates():
						if e == nil {
							return fmt.Errorf("watch %s: no entry before the end of the initial values", bucket)
						}
					case <-cx.Done():
						return fmt.Errorf("watch %s: %w", bucket, cx.Err())
					}
					_ = w.Stop()
				}
				return nil
			},
		},
		{
			name: "read the record streams", allowed: []bustest.Role{node, backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				js, _ := jetstream.New(c.Conn)
				cx := ctx(t)
				for stream, subj := range map[string]string{
					schema.StreamStatus: "hub.dev.R-1.status", schema.StreamEvents: "hub.dev.R-1.event", schema.StreamPresence: "hub.presence.R-1",
				} {
					s, err := js.Stream(cx, stream)
					if err != nil {
						return fmt.Errorf("info %s: %w", stream, err)
					}
					m, err := s.GetLastMsgForSubject(cx, subj)
					if err != nil {
						return fmt.Errorf("last of %s: %w", subj, err)
					}
					if _, err := s.GetMsg(cx, m.Sequence); err != nil {
						return fmt.Errorf("get %s #%d: %w", stream, m.Sequence, err)
					}
					cons, err := js.OrderedConsumer(cx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
					if err != nil {
						return fmt.Errorf("ordered consumer on %s: %w", stream, err)
					}
					if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
						return fmt.Errorf("next of %s: %w", stream, err)
					}
				}
				return nil
			},
		},
	}
	reg, err := f.nodeKV(t, schema.BucketDevices).Get(ctx(t), "R-reg")
	if err != nil {
		t.Fatal(err)
	}
	rows = append(rows, kvWriteRow(schema.BucketDevices, "R-reg", []bustest.Role{node, operator}, []bustest.Role{backend},
		func(string) []byte { return []byte(`{"type":"robot","group":"g1"}`) },
		func(t *testing.T, f *fleet, tag string) {
			t.Helper()
			e, err := f.nodeKV(t, schema.BucketDevices).Get(ctx(t), "R-reg")
			if err != nil || e.Revision() != reg.Revision() {
				t.Fatalf("R-reg entry now %v (%v), was revision %d", e, err, reg.Revision())
			}
		})...)
	rows = append(rows, kvWriteRow(schema.BucketUsers, "admin", []bustest.Role{node, operator}, []bustest.Role{backend}, userValue, adminOnly)...)
	rows = append(rows, kvWriteRow(schema.BucketPresence, "R-1", []bustest.Role{node}, []bustest.Role{backend, operator}, func(string) []byte { return []byte(`{}`) }, presenceUnchanged)...)
	rows = append(rows, kvWriteRow(schema.BucketNonces, "", []bustest.Role{node}, []bustest.Role{backend, operator}, func(string) []byte { return []byte(`1`) }, func(t *testing.T, f *fleet, tag string) {
		t.Helper()
		if _, err := f.nodeKV(t, schema.BucketNonces).Get(ctx(t), "k-"+tag); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("k-%s in hub_nonces: %v", tag, err)
		}
	})...)
	rows = append(rows,
		row{
			name: "create, update and remove users", allowed: []bustest.Role{operator}, refused: []bustest.Role{backend},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				return guard(c, func(cx context.Context) error { return manageUsers(cx, t, f, c, tag, userValue(tag)) })
			},
			unchanged: adminOnly,
		},
		row{
			name: "read hub_users", allowed: []bustest.Role{node, operator}, refused: []bustest.Role{backend},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				return guard(c, func(cx context.Context) error { return readUsers(cx, c) })
			},
		},
		row{
			name: "announce a takeover", allowed: []bustest.Role{node}, refused: []bustest.Role{backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				if c.Role == node {
					// The nodes' own takeover: the device moves to node B
					// and its session on node A is replaced.
					sn := "R-move-" + tag
					first := hubtest.Device(t, f.a, sn, "robot")
					second := hubtest.Device(t, f.b, sn, "robot")
					defer second.Conn.Close()
					if code := first.Closed(5 * time.Second); code != 4001 {
						return fmt.Errorf("first session closed with %d, want 4001", code)
					}
					return nil
				}
				b, _ := json.Marshal(map[string]any{"sn": "R-1", "session": "zzzz", "node": "evil", "at_ns": int64(1) << 62})
				if err := c.Publish("hub.ctl.takeover", b); err != nil {
					return err
				}
				_ = c.Flush()
				return refusedPublish(c, "hub.ctl.takeover")
			},
			unchanged: presenceUnchanged,
		},
	)
	for _, subj := range []string{"hub.dev.R-1.status", "hub.dev.R-1.event", "hub.presence.R-1"} {
		rows = append(rows, row{
			name: "publish a record on " + subj, allowed: []bustest.Role{node}, refused: []bustest.Role{backend, operator},
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				before, err := f.lastMsg(subj)
				if err != nil {
					return err
				}
				if err := c.Publish(subj, []byte(`{"sn":"R-1","forged":"`+tag+`"}`)); err != nil {
					return err
				}
				_ = c.Flush()
				return waitFor(5*time.Second, func() error {
					if c.Errors.Has(`Publish to "` + subj + `"`) {
						return fmt.Errorf("publish to %s: %w", subj, nats.ErrPermissionViolation)
					}
					if m, err := f.lastMsg(subj); err == nil && m.Sequence != before.Sequence {
						return nil
					}
					return errors.New("record not stored yet")
				})
			},
			unchanged: func(t *testing.T, f *fleet, tag string) {
				m, err := f.lastMsg(subj)
				if err != nil || strings.Contains(string(m.Data), tag) {
					t.Fatalf("last record on %s: %v %s", subj, err, m.Data)
				}
			},
		})
	}
	captured := make(map[string]map[string]any) // device logins by tag
	rows = append(rows, row{
		// The replay of a captured device login is refused by its claimed
		// nonce; removing the claim would let it in again.
		name: "replay a captured login after purging its nonce", allowed: []bustest.Role{node}, refused: []bustest.Role{backend, operator},
		try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
			args := hubtest.DeviceArgs("R-cap-"+tag, "robot")
			captured[tag] = args
			first := hubtest.Dial(t, f.a.WSURL(), nil)
			first.MustOK("/auth/device", args)
			first.Conn.Close()
			replay := hubtest.Dial(t, f.b.WSURL(), nil)
			defer replay.Conn.Close()
			if r := replay.Request("/auth/device", args); r.Code == 0 {
				return fmt.Errorf("replay accepted before any purge: %s", r.Raw)
			}
			sum := sha256.Sum256([]byte(args["nonce"].(string)))
			if err := kvWrite(t, c, schema.BucketNonces, hex.EncodeToString(sum[:16]), "purge", nil); err != nil {
				return err
			}
			again := hubtest.Dial(t, f.b.WSURL(), nil)
			defer again.Conn.Close()
			if r := again.Request("/auth/device", args); r.Code != 0 {
				return fmt.Errorf("replay after the purge refused: %s", r.Raw)
			}
			return nil
		},
		unchanged: func(t *testing.T, f *fleet, tag string) {
			replay := hubtest.Dial(t, f.b.WSURL(), nil)
			defer replay.Conn.Close()
			if r := replay.Request("/auth/device", captured[tag]); r.Code == 0 {
				t.Fatalf("replay accepted: %s", r.Raw)
			}
		},
	})
	rows = append(rows, row{
		name: "publish on a watch subject", allowed: []bustest.Role{node}, refused: []bustest.Role{backend, operator},
		try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
			// What nodes send each other for the admins watching a device.
			subj := "hub.watch.default.robot.R-1.status"
			if err := c.Publish(subj, []byte(`{"sn":"R-1","type":"robot","group":"default","status":{"forged":true}}`)); err != nil {
				return err
			}
			// The server answers a refused publish before the PONG, and
			// nats.go records it as it reads it.
			if err := c.Flush(); err != nil {
				return err
			}
			if err := c.LastError(); err != nil && strings.Contains(err.Error(), subj) {
				return fmt.Errorf("%v: %w", err, nats.ErrPermissionViolation)
			}
			return nil
		},
	})
	for _, s := range []struct {
		subj, queue string
		allowed     []bustest.Role
		refused     []bustest.Role
	}{
		{"hub.dev.*.cmd", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{"hub.dev.R-1.cmd", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{"hub.ctl.>", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{"hub.ctl.dir.*", "directory", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{"hub.watch.>", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{"_INBOX_hub.>", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{"_INBOX_ops.>", "", []bustest.Role{node, operator}, []bustest.Role{backend}},
		{"_INBOX.>", "", []bustest.Role{node, backend}, []bustest.Role{operator}},
		{"$KV.hub_users.>", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
		{">", "", []bustest.Role{node}, []bustest.Role{backend, operator}},
	} {
		rows = append(rows, row{
			name: "subscribe " + s.subj, allowed: s.allowed, refused: s.refused,
			try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
				sub, err := subscribe(c, s.subj, s.queue)
				if err == nil {
					_ = sub.Unsubscribe()
				}
				return err
			},
		})
	}
	rows = append(rows, row{
		name: "create a stream", allowed: []bustest.Role{node}, refused: []bustest.Role{backend, operator},
		try: func(t *testing.T, f *fleet, c *bustest.Conn, tag string) error {
			js, _ := jetstream.New(c.Conn)
			name := "EVIL_" + strings.ToUpper(tag)
			return guard(c, func(cx context.Context) error {
				_, err := js.CreateStream(cx, jetstream.StreamConfig{Name: name, Subjects: []string{"evil." + tag + ".>"}, Storage: jetstream.MemoryStorage})
				if err != nil {
					return err
				}
				return js.DeleteStream(cx, name)
			})
		},
		unchanged: func(t *testing.T, f *fleet, tag string) {
			if _, err := f.nodeJS.Stream(ctx(t), "EVIL_"+strings.ToUpper(tag)); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Fatalf("stream EVIL_%s: %v", tag, err)
			}
		},
	})

	t.Run("listens on loopback only", func(t *testing.T) {
		want := "Listening for client connections on 127.0.0.1:" + strconv.Itoa(f.bus.Proc.Port)
		if log := f.bus.Proc.Log(); !strings.Contains(log, want) {
			t.Fatalf("server log does not say %q:\n%s", want, log)
		}
	})
	t.Run("connect without credentials or with an unknown key", func(t *testing.T) {
		if nc, err := nats.Connect(f.bus.Proc.URL()); err == nil {
			nc.Close()
			t.Fatal("connected without credentials")
		}
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		opt := nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) })
		if nc, err := nats.Connect(f.bus.Proc.URL(), opt); err == nil {
			nc.Close()
			t.Fatal("connected with an unknown key")
		}
		// With a role's key the same connection works (every row below).
		if err := f.conns[backend].Flush(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("push consumers delivering into hub.ctl.takeover and hub_users", func(t *testing.T) {
		// JetStream publishes for a consumer's creator on any subject it
		// names, whatever the creator's own permissions (nats-server
		// 2.15): the nodes drop the control messages they did not sign,
		// and the server delivers nothing into a bucket's subjects (a
		// deleted registry entry's marker, delivered on the admin's key,
		// would delete the admin).
		op := f.conns[operator]
		ojs, _ := jetstream.New(op.Conn)
		reg, err := ojs.KeyValue(ctx(t), schema.BucketDevices)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Put(ctx(t), "X-1", []byte(`{"type":"robot","group":"g1"}`)); err != nil {
			t.Fatal(err)
		}
		if err := reg.Delete(ctx(t), "X-1"); err != nil {
			t.Fatal(err)
		}
		c := f.conns[backend]
		before := counter(t, f.a, "fleethub_control_refused_total", "unsigned")
		for _, cons := range []struct{ stream, name, filter, deliver string }{
			{"KV_hub_devices", "relay1", "$KV.hub_devices.X-1", "$KV.hub_users.admin"},
			{"KV_hub_devices", "relay2", "$KV.hub_devices.X-1", "$KV.hub_nonces.n1"},
			{"HUB_EVENTS", "relay3", "hub.dev.R-1.event", "hub.ctl.takeover"},
		} {
			req := `{"stream_name":"` + cons.stream + `","config":{"name":"` + cons.name + `","deliver_subject":"` + cons.deliver +
				`","filter_subject":"` + cons.filter + `","ack_policy":"none","deliver_policy":"all"}}`
			m, err := c.Request("$JS.API.CONSUMER.CREATE."+cons.stream+"."+cons.name+"."+cons.filter, []byte(req), 5*time.Second)
			if err != nil || strings.Contains(string(m.Data), `"error"`) {
				t.Fatalf("consumer %s not created (%v): %s", cons.name, err, m.Data)
			}
			t.Cleanup(func() { _ = f.nodeJS.DeleteConsumer(context.Background(), cons.stream, cons.name) })
		}
		natstest.Eventually(t, 10*time.Second, func() error {
			if got := counter(t, f.a, "fleethub_control_refused_total", "unsigned"); got <= before {
				return fmt.Errorf("control_refused_total{reason=unsigned} still %v", got)
			}
			return nil
		})
		f.dev.MustOK("/ping", nil)
		adminOnly(t, f, "relay")
		if _, err := f.nodeKV(t, schema.BucketNonces).Get(ctx(t), "n1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("n1 in hub_nonces: %v", err)
		}
	})
	// Rows run one after the other: they share the device.
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if len(r.allowed) == 0 && len(r.refused) == 0 {
				t.Fatal("row tried no way")
			}
			for _, role := range r.allowed {
				t.Run(string(role)+" allowed", func(t *testing.T) {
					if err := r.try(t, f, f.conns[role], tag(r.name, role)); err != nil {
						t.Fatalf("%s refused: %v", role, err)
					}
				})
			}
			for _, role := range r.refused {
				t.Run(string(role)+" refused", func(t *testing.T) {
					c := f.conns[role]
					tg := tag(r.name, role)
					err := r.try(t, f, c, tg)
					if err == nil {
						t.Fatalf("%s was allowed", role)
					}
					if !errors.Is(err, nats.ErrPermissionViolation) {
						t.Fatalf("%s failed, but not for lack of permission: %v", role, err)
					}
					t.Logf("refused: %v", err)
					if r.unchanged != nil {
						r.unchanged(t, f, tg)
					}
				})
			}
		})
	}
}

// tag is a short token unique to a row and role, for keys and services.
func tag(name string, r bustest.Role) string {
	var b strings.Builder
	for _, c := range name {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	s := b.String()
	if len(s) > 24 {
		s = s[:24]
	}
	return s + "-" + string(r)
}

// manageUsers does what hubctl user add, passwd and rm do (and a create
// of a super-admin, evil), and checks that a node lets the new user log
// in.
func manageUsers(cx context.Context, t *testing.T, f *fleet, c *bustest.Conn, tag string, evil []byte) error {
	js, _ := jetstream.New(c.Conn)
	kv, err := js.KeyValue(cx, schema.BucketUsers)
	if err != nil {
		return err
	}
	if _, err := kv.Create(cx, "evil", evil); err != nil {
		return err
	}
	if err := kv.Delete(cx, "evil"); err != nil {
		return err
	}
	name := "u-" + tag
	hash, _ := auth.HashPassword("pw-1", 4)
	u := auth.User{Name: name, Role: auth.RoleViewer, Groups: []string{"g1"}, PasswordHash: hash, UpdatedAt: time.Now().UnixMilli()}
	b, _ := json.Marshal(u)
	rev, err := kv.Create(cx, name, b)
	if err != nil {
		return err
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		c, err := hubtest.TryDial(t, f.a.WSURL(), nil)
		if err != nil {
			return err
		}
		defer c.Conn.Close()
		if r := c.Request("/auth/login", map[string]any{"username": name, "password": "pw-1"}); r.Code != 0 {
			return fmt.Errorf("login: %s", r.Raw)
		}
		return nil
	})
	u.PasswordHash, _ = auth.HashPassword("pw-2", 4)
	b, _ = json.Marshal(u)
	if rev, err = kv.Update(cx, name, b, rev); err != nil {
		return err
	}
	if err := kv.Delete(cx, name, jetstream.LastRevision(rev)); err != nil {
		return err
	}
	return nil
}

// readUsers reads hub_users as c: a direct get of the admin, as a reader
// that knows the stream's name would send it, and a watch.
func readUsers(cx context.Context, c *bustest.Conn) error {
	m, err := c.RequestWithContext(cx, "$JS.API.DIRECT.GET.KV_hub_users.$KV.hub_users.admin", nil)
	if err != nil {
		return err
	}
	if !strings.Contains(string(m.Data), "password_hash") {
		return fmt.Errorf("direct get answered %q", m.Data)
	}
	js, _ := jetstream.New(c.Conn)
	kv, err := js.KeyValue(cx, schema.BucketUsers)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(cx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	if e := <-w.Updates(); e == nil || e.Key() != "admin" {
		return fmt.Errorf("watch of hub_users gave %v", e)
	}
	return nil
}

// counter is the value of a counter of n's metrics with the given reason.
func counter(t *testing.T, n *hubtest.Node, name, reason string) float64 {
	t.Helper()
	mfs, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}
