package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Device views are read from JetStream, a page at a time: each device's
// last status from HUB_STATUS, and for online devices their hub_presence
// entry, by direct gets of the last message of many subjects at once
// (multi_last, nats-server 2.11 and later). No node keeps them in memory.

// maxMultiLast is how many subjects one direct get asks for: the server
// answers at most 1024 messages to one.
const maxMultiLast = 1000

// multiLastRequest is a direct get of the last message of each subject.
type multiLastRequest struct {
	MultiLast []string `json:"multi_last"`
	Batch     int      `json:"batch,omitempty"`
}

// lastOf names the subjects whose last message to read from a stream.
type lastOf struct {
	stream string
	subjs  []string
}

// lastMessages reads the last message of every subject of each read, all
// requests sent at once, and returns, per read, the data by subject of
// those that have one (a KV delete or a TTL marker counts as none).
func (srv *Server) lastMessages(ctx context.Context, reads []lastOf) ([]map[string][]byte, error) {
	out := make([]map[string][]byte, len(reads))
	type chunk struct {
		read  int
		subjs []string
	}
	var chunks []chunk
	for i, r := range reads {
		out[i] = make(map[string][]byte, len(r.subjs))
		for s := range slices.Chunk(r.subjs, maxMultiLast) {
			chunks = append(chunks, chunk{i, s})
		}
	}
	if len(chunks) == 0 {
		return out, nil
	}
	prefix := srv.nc.NewInbox()
	sub, err := srv.nc.SubscribeSync(prefix + ".*")
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	ask := func(i int, subjs []string) error {
		req, err := json.Marshal(multiLastRequest{MultiLast: subjs, Batch: len(subjs)})
		if err != nil {
			return err
		}
		return srv.nc.PublishRequest(srv.directGetSubject(reads[chunks[i].read].stream), prefix+"."+strconv.Itoa(i), req)
	}
	for i, c := range chunks {
		if err := ask(i, c.subjs); err != nil {
			return nil, err
		}
	}
	for open := len(chunks); open > 0; {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("direct get: %w", err)
		}
		i, err := strconv.Atoi(m.Subject[len(prefix)+1:])
		if err != nil || i < 0 || i >= len(chunks) {
			continue
		}
		got := out[chunks[i].read]
		switch status := m.Header.Get("Status"); status {
		case "":
			if isMarker(m) {
				continue
			}
			got[m.Header.Get(jetstream.SubjectHeader)] = m.Data
		case "204": // end of the batch
			if m.Header.Get("Nats-Num-Pending") == "0" {
				open--
				continue
			}
			// Cut short by the server's byte limit: ask for the rest.
			var rest []string
			for _, s := range chunks[i].subjs {
				if _, ok := got[s]; !ok {
					rest = append(rest, s)
				}
			}
			chunks[i].subjs = rest
			if err := ask(i, rest); err != nil {
				return nil, err
			}
		case "404": // none of them has a message
			open--
		default:
			return nil, fmt.Errorf("direct get %s: status %s %s", reads[chunks[i].read].stream, status, m.Header.Get("Description"))
		}
	}
	return out, nil
}

// isMarker reports whether a stored message is a KV delete or purge, or a
// marker the server left when a message's TTL ran out.
func isMarker(m *nats.Msg) bool {
	return len(m.Data) == 0 && (m.Header.Get("KV-Operation") != "" || m.Header.Get("Nats-Marker-Reason") != "")
}

// deviceViews completes the entries of a page into device views: each
// one's last status (HUB_STATUS) and, for an online device, its presence
// entry (node, since, last_seen), by direct gets sent together.
// With pre, the reads are those already made (explicitEntries).
func (srv *Server) deviceViews(ctx context.Context, es []dirEntry, pre *viewReads) ([]DeviceView, error) {
	if pre == nil {
		statusSubjs := make([]string, 0, len(es))
		var entrySubjs []string
		for _, e := range es {
			if s, err := subjects.DeviceStatus(e.SN); err == nil {
				statusSubjs = append(statusSubjs, s)
			}
			if e.Online {
				if s, err := subjects.KVKey(BucketPresence, e.SN); err == nil {
					entrySubjs = append(entrySubjs, s)
				}
			}
		}
		got, err := srv.lastMessages(ctx, []lastOf{{StreamStatus, statusSubjs}, {"KV_" + BucketPresence, entrySubjs}})
		if err != nil {
			return nil, err
		}
		pre = &viewReads{statuses: got[0], entries: got[1]}
	}
	statuses, entries := pre.statuses, pre.entries
	views := make([]DeviceView, len(es))
	for i, e := range es {
		v := DeviceView{SN: e.SN, Type: e.Type, Group: e.Group, Online: e.Online, Since: e.Since, LastSeen: e.Since, Status: json.RawMessage("null")}
		if e.Online {
			v.Node = e.Node
			if s, err := subjects.KVKey(BucketPresence, e.SN); err == nil {
				var pe PresenceEntry
				if b, ok := entries[s]; ok && json.Unmarshal(b, &pe) == nil {
					v.Node, v.Since, v.LastSeen = pe.Node, pe.Since, max(pe.LastSeen, pe.Since)
					v.Addr, v.Session = pe.Addr, pe.Session
				}
			}
		}
		if s, err := subjects.DeviceStatus(e.SN); err == nil {
			var r struct {
				At     int64           `json:"at"`
				Status json.RawMessage `json:"status"`
			}
			if b, ok := statuses[s]; ok && json.Unmarshal(b, &r) == nil && len(r.Status) > 0 {
				at := r.At
				v.Status, v.StatusAt = r.Status, &at
			}
		}
		views[i] = v
	}
	return views, nil
}

// viewReads are the last status records and presence entries of a
// page's devices, by subject.
type viewReads struct {
	statuses, entries map[string][]byte
}

// explicitEntries are the known devices among sns (sorted, all after the
// cursor) that mt matches, at most limit of them, read straight from
// JetStream without the directory: their last presence record
// (HUB_PRESENCE) and presence entry (hub_presence). A device is known when
// it has either; it is online while it has an entry. more says that
// others follow. ok false means HUB_PRESENCE allows no direct gets: the
// directory must answer.
//
// Their status records are read in the same round, and returned in pre for
// deviceViews.
func (srv *Server) explicitEntries(ctx context.Context, mt *matcher, sns []string, limit int) (es []dirEntry, pre *viewReads, more, ok bool, err error) {
	direct, err := srv.presenceDirect(ctx)
	if err != nil || !direct {
		return nil, nil, false, false, err
	}
	pre = &viewReads{statuses: map[string][]byte{}, entries: map[string][]byte{}}
	for batch := range slices.Chunk(sns, maxMultiLast) {
		var names, recSubjs, entrySubjs, statusSubjs []string
		for _, sn := range batch {
			rs, err1 := subjects.Presence(sn)
			ks, err2 := subjects.KVKey(BucketPresence, sn)
			ss, err3 := subjects.DeviceStatus(sn)
			if err1 != nil || err2 != nil || err3 != nil {
				continue
			}
			names, recSubjs, entrySubjs, statusSubjs = append(names, sn), append(recSubjs, rs), append(entrySubjs, ks), append(statusSubjs, ss)
		}
		got, err := srv.lastMessages(ctx, []lastOf{{StreamPresence, recSubjs}, {"KV_" + BucketPresence, entrySubjs}, {StreamStatus, statusSubjs}})
		if err != nil {
			return nil, nil, false, true, err
		}
		maps.Copy(pre.entries, got[1])
		maps.Copy(pre.statuses, got[2])
		for i := range recSubjs {
			sn := names[i]
			var r PresenceRecord
			recB, hasRec := got[0][recSubjs[i]]
			hasRec = hasRec && json.Unmarshal(recB, &r) == nil && validPresence(&r)
			var pe PresenceEntry
			entB, online := got[1][entrySubjs[i]]
			online = online && json.Unmarshal(entB, &pe) == nil
			if !hasRec && !online {
				continue
			}
			e := dirEntry{SN: sn, Online: online, Type: r.Type, Group: r.Group, Since: r.At}
			if e.Type == "" {
				e.Type, e.Group = pe.Type, pe.Group
			}
			if e.Type == "" {
				if d, ok := srv.registry.get(sn); ok {
					e.Type, e.Group = d.Type, d.Group
				}
			}
			if online {
				e.Node, e.Since = pe.Node, pe.Since
			}
			if !mt.match(sn, e.Type, e.Group, e.Online) {
				continue
			}
			if len(es) == limit {
				return es, pre, true, true, nil
			}
			es = append(es, e)
		}
	}
	return es, pre, false, true, nil
}

// presenceDirect reports whether HUB_PRESENCE allows direct gets, asking
// the stream at most every presenceDirectAge.
func (srv *Server) presenceDirect(ctx context.Context) (bool, error) {
	now := time.Now()
	srv.dir.directMu.Lock()
	if now.Before(srv.dir.directUntil) {
		v := srv.dir.direct
		srv.dir.directMu.Unlock()
		return v, nil
	}
	srv.dir.directMu.Unlock()
	st, err := srv.js.Stream(ctx, StreamPresence)
	if err != nil {
		return false, err
	}
	v := st.CachedInfo().Config.AllowDirect
	srv.dir.directMu.Lock()
	srv.dir.direct, srv.dir.directUntil = v, now.Add(presenceDirectAge)
	srv.dir.directMu.Unlock()
	return v, nil
}

// presenceDirectAge is how long presenceDirect trusts what it read.
const presenceDirectAge = 10 * time.Second
