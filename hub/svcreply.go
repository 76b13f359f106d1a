package hub

import (
	"context"
	"strconv"
	"sync"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// svcReplies is the node's request mux for hub.svc.<path> requests. Their
// replies come back on _HUB_SVC.<conn>.<id> instead of the node's inbox:
// a backend's permissions can then allow it to publish there without
// allow_responses, which would also let it answer any message it follows
// that carries a reply subject, such as the JetStream acknowledgement
// inbox of every record a node stores.
//
// Locks: svcReplies.mu is taken alone.
type svcReplies struct {
	prefix string // "_HUB_SVC.<conn>."
	sub    *nats.Subscription

	mu      sync.Mutex
	next    uint64
	waiting map[string]chan *nats.Msg
}

func newSvcReplies() *svcReplies {
	return &svcReplies{
		prefix:  schema.ServiceReplyPrefix + "." + nuid.Next() + ".",
		waiting: make(map[string]chan *nats.Msg),
	}
}

// open subscribes to the node's reply subjects.
func (r *svcReplies) open(nc *nats.Conn) (err error) {
	r.sub, err = nc.Subscribe(r.prefix+"*", r.onReply)
	return err
}

func (r *svcReplies) close() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
}

// onReply hands a reply to the request waiting for it; a late or unknown
// reply (its request gave up) is dropped, as nats.go drops them.
func (r *svcReplies) onReply(m *nats.Msg) {
	id := m.Subject[len(r.prefix):]
	r.mu.Lock()
	ch := r.waiting[id]
	delete(r.waiting, id)
	r.mu.Unlock()
	if ch != nil {
		ch <- m // buffered: never blocks
	}
}

// request publishes msg with a reply subject of the mux and waits for the
// first reply until ctx ends. Like nats.go's requests, it reports
// nats.ErrNoResponders when the server says nobody subscribes.
func (r *svcReplies) request(ctx context.Context, nc *nats.Conn, msg *nats.Msg) (*nats.Msg, error) {
	ch := make(chan *nats.Msg, 1)
	r.mu.Lock()
	r.next++
	id := strconv.FormatUint(r.next, 36)
	r.waiting[id] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, id)
		r.mu.Unlock()
	}()
	msg.Reply = r.prefix + id
	if err := nc.PublishMsg(msg); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
