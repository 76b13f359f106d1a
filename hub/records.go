package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fleethub/fleethub/auth"
	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// validStatus reports whether a status record read back from HUB_STATUS is
// one the hub could have stored: any writer of the stream may store others,
// and those are neither kept nor pushed.
func validStatus(r *StatusRecord) bool { return auth.ValidSerial(r.SN) && wire.IsObject(r.Status) }

// validEvent reports whether an event record read back from HUB_EVENTS is
// one the hub could have stored.
func validEvent(r *EventRecord) bool {
	_, known := priorities[r.Priority]
	return known && auth.ValidSerial(r.SN) && wire.IsObject(r.Data)
}

// modelFields are the status fields of the device model: each, when
// present, an object with an integer code and a string msg, plus free
// fields.
var modelFields = []string{"location", "inspection", "rubbish", "electricity"}

// stampedFields are replaced by the hub's own values in a status body.
var stampedFields = []string{"sn", "type", "group", "at"}

// dataStreams are the configs of the status and event streams the node
// writes: HUB_STATUS and HUB_EVENTS, or in data-centre mode the data
// centre's own, on its DC subjects, republished on the §6 subjects so
// that live subscribers of hub.dev.<sn>.status see them as before (the
// §6 names are then aggregates: see layout.go).
func dataStreams(srv *Server) []jetstream.StreamConfig {
	l := srv.layout
	scs := []jetstream.StreamConfig{
		{
			Name: l.StatusStream(), Description: "device status records, the newest per device",
			Subjects: []string{l.StatusSubjects()}, MaxMsgsPerSubject: int64(srv.cfg.StatusHistory),
			MaxAge: srv.cfg.RecordAge, AllowDirect: true,
		},
		{
			Name: l.EventStream(), Description: "device event records, the newest per device",
			Subjects: []string{l.EventSubjects()}, MaxMsgsPerSubject: int64(srv.cfg.EventHistory),
			MaxAge: srv.cfg.RecordAge, AllowDirect: true,
		},
	}
	if l.DCMode() {
		scs[0].RePublish = &jetstream.RePublish{Source: l.StatusSubjects(), Destination: subjects.Prefix + ".dev.{{wildcard(1)}}.status"}
		scs[1].RePublish = &jetstream.RePublish{Source: l.EventSubjects(), Destination: subjects.Prefix + ".dev.{{wildcard(1)}}.event"}
	}
	for i := range scs {
		scs[i].Placement = pres.Placement(l)
		scs[i].Storage, scs[i].Replicas, scs[i].Discard = jetstream.FileStorage, srv.cfg.Replicas, jetstream.DiscardOld
		// Records carry a Nats-Msg-Id, so that one published again after
		// a lost acknowledgement is stored once (storeRecord); the window
		// only needs to cover recordWait.
		scs[i].Duplicates = recordDuplicates
	}
	return scs
}

// openDataStreams creates the status and event streams.
func openDataStreams(ctx context.Context, srv *Server) error {
	for _, sc := range dataStreams(srv) {
		if err := createStream(ctx, srv, sc); err != nil {
			return fmt.Errorf("hub: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

func createStream(ctx context.Context, srv *Server, sc jetstream.StreamConfig) error {
	_, err := jscreate.Stream(ctx, srv.js, sc)
	return err
}

// checkModel validates the device model's known fields of a status body.
func checkModel(body map[string]json.RawMessage) *wire.Error {
	for _, f := range modelFields {
		raw, ok := body[f]
		if !ok || wire.IsNull(raw) {
			continue
		}
		// A map, not a struct: a struct's fields match keys in any case, and
		// {"code":"x","Code":1} would pass with a string code.
		var v map[string]json.RawMessage
		if !wire.IsObject(raw) || json.Unmarshal(raw, &v) != nil {
			return wire.Errorf(wire.CodeBadRequest, "args."+f+": must be an object {\"code\":int,\"msg\":string}")
		}
		var code int64
		if c, ok := v["code"]; ok && json.Unmarshal(c, &code) != nil {
			return wire.Errorf(wire.CodeBadRequest, "args."+f+".code: must be an integer")
		}
		var msg string
		if m, ok := v["msg"]; ok && json.Unmarshal(m, &msg) != nil {
			return wire.Errorf(wire.CodeBadRequest, "args."+f+".msg: must be a string")
		}
	}
	return nil
}

// serveStatus stores a device's status report and publishes it.
func (srv *Server) serveStatus(s *Session, m *wire.Message) (any, *wire.Error) {
	id := s.Identity()
	if len(m.Args) > srv.cfg.MaxRecordBytes {
		return nil, wire.Errorf(wire.CodeTooLarge, fmt.Sprintf("status is %d bytes, more than %d", len(m.Args), srv.cfg.MaxRecordBytes))
	}
	body := map[string]json.RawMessage{}
	if werr := wire.DecodeArgs(m.Args, &body); werr != nil {
		return nil, werr
	}
	if werr := checkModel(body); werr != nil {
		return nil, werr
	}
	if !s.stormOf().allowStatus() {
		srv.stormed(s, "status")
		return nil, wire.Errorf(wire.CodeRateLimited, "status reports too frequent")
	}
	// The hub's own sn, type, group and time: a device never reports for
	// another serial number.
	for _, f := range stampedFields {
		delete(body, f)
	}
	status, _ := json.Marshal(body)
	rec := StatusRecord{SN: id.SN, Type: id.Type, Group: id.Group, At: srv.cfg.Now().UnixMilli(), Status: status}
	subj, _ := srv.layout.StatusSubject(id.SN)
	// Stored off the read loop, in order, and answered once stored
	// (recordqueue.go).
	return srv.queueRecord(s, m, srv.layout.StatusStream(), subj, rec, map[string]int64{"at": rec.At}, func(b []byte, _ uint64) {
		srv.publishWatch(subjects.WatchStatus, rec.Group, rec.Type, rec.SN, b)
	})
}

type eventArgs struct {
	Event    *string         `json:"event"`
	Priority *string         `json:"priority"`
	Data     json.RawMessage `json:"data"`
}

// serveEvent stores a device's event and publishes it.
func (srv *Server) serveEvent(s *Session, m *wire.Message) (any, *wire.Error) {
	id := s.Identity()
	if len(m.Args) > srv.cfg.MaxRecordBytes {
		return nil, wire.Errorf(wire.CodeTooLarge, fmt.Sprintf("event is %d bytes, more than %d", len(m.Args), srv.cfg.MaxRecordBytes))
	}
	var a eventArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	if a.Event == nil {
		return nil, missing("event")
	}
	if *a.Event == "" || len(*a.Event) > 64 || strings.ContainsAny(*a.Event, "\n\r\t") {
		return nil, wire.Errorf(wire.CodeBadRequest, "args.event: must be 1 to 64 characters")
	}
	prio := "normal"
	if a.Priority != nil {
		prio = *a.Priority
	}
	level, ok := priorities[prio]
	if !ok {
		return nil, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.priority: unknown priority %q (want emergency, high or normal)", wire.Clip(prio)))
	}
	if !wire.IsNull(a.Data) && !wire.IsObject(a.Data) {
		return nil, wire.Errorf(wire.CodeBadRequest, "args.data: must be an object")
	}
	if !s.stormOf().allowEvent(level) {
		srv.stormed(s, "event_"+prio)
		return nil, wire.Errorf(wire.CodeRateLimited, prio+" events too frequent")
	}
	data := a.Data
	if wire.IsNull(data) {
		data = wire.EmptyObject
	}
	rec := EventRecord{SN: id.SN, Type: id.Type, Group: id.Group, At: srv.cfg.Now().UnixMilli(), Event: *a.Event, Priority: prio, Data: data}
	subj, _ := srv.layout.EventSubject(id.SN)
	return srv.queueRecord(s, m, srv.layout.EventStream(), subj, rec, map[string]int64{"at": rec.At}, func(b []byte, seq uint64) {
		srv.publishWatchID(subjects.WatchEvent, rec.Group, rec.Type, rec.SN, srv.recordPushID('e', seq), b)
	})
}

// storeTimeout bounds a wait for the NATS server (see flushWatch).
const storeTimeout = 3 * time.Second
