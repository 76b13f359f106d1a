package hub

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// /admin/forget removes an offline device from the hub: its records are
// purged from HUB_PRESENCE, HUB_STATUS and HUB_EVENTS, then its registry
// entry is deleted (a delete marker also when it had none). The directory
// follows the registry: a live delete makes it check HUB_PRESENCE, and a
// device with no presence record left is no longer listed or counted.

// forgetTimeout bounds one /admin/forget.
const forgetTimeout = 10 * time.Second

type forgetArgs struct {
	SN *string `json:"sn"`
}

func (srv *Server) serveForget(s *Session, m *wire.Message) (any, *wire.Error) {
	var a forgetArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	switch {
	case a.SN == nil:
		return nil, missing("sn")
	case !auth.ValidSerial(*a.SN):
		return nil, wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
	}
	if srv.busDown() {
		return nil, errBusDown
	}
	sn, groups := *a.SN, s.Identity().Groups
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		if werr := srv.Forget(ctx, sn, groups); werr != nil {
			return nil, werr
		}
		return map[string]any{"sn": sn}, nil
	})
}

// Forget removes the offline device sn: 409 while it is online, 404 when
// the hub does not know it, 403 when it is outside groups.
func (srv *Server) Forget(ctx context.Context, sn string, groups []string) *wire.Error {
	ctx, cancel := context.WithTimeout(ctx, forgetTimeout)
	defer cancel()
	entry, err := subjects.KVKey(schema.BucketPresence, sn)
	if err != nil {
		return wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
	}
	_, group, known := srv.deviceAttrs(sn)
	if !known {
		return wire.Errorf(wire.CodeNotFound, "unknown device "+sn)
	}
	if !auth.CanSee(groups, group) {
		return wire.Errorf(wire.CodeForbidden, "device "+sn+" is outside your groups")
	}
	got, err := srv.lastMessages(ctx, []lastOf{{"KV_" + schema.BucketPresence, []string{entry}}})
	if err != nil {
		srv.warnLimited("forget: presence read failed", "sn", sn, "err", err)
		return natsFailure(err, "presence")
	}
	if _, online := got[0][entry]; online {
		return wire.Errorf(wire.CodeConflict, "device "+sn+" is online: kick it first, or wait until it is offline")
	}
	purges := []struct {
		stream string
		subj   func(string) (string, error)
	}{
		{schema.StreamPresence, subjects.Presence},
		{schema.StreamStatus, subjects.DeviceStatus},
		{schema.StreamEvents, subjects.DeviceEvent},
	}
	if l := srv.layout; l.DCMode() {
		// The views above, and this data centre's own streams (what the
		// views source); another data centre's view keeps its copy.
		purges = append(purges, []struct {
			stream string
			subj   func(string) (string, error)
		}{
			{l.PresenceStream(), l.PresenceSubject},
			{l.StatusStream(), l.StatusSubject},
			{l.EventStream(), l.EventSubject},
		}...)
	}
	for _, p := range purges {
		subj, err := p.subj(sn)
		if err != nil {
			return wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
		}
		st, err := srv.js.Stream(ctx, p.stream)
		if err == nil {
			err = st.Purge(ctx, jetstream.WithPurgeSubject(subj))
		}
		if err != nil {
			srv.warnLimited("forget: purge failed", "stream", p.stream, "sn", sn, "err", err)
			return natsFailure(err, p.stream)
		}
	}
	if err := srv.registry.kv.Delete(ctx, sn); err != nil {
		srv.warnLimited("forget: registry delete failed", "sn", sn, "err", err)
		return natsFailure(err, schema.BucketDevices)
	}
	srv.log.Info("device forgotten", "sn", sn)
	return nil
}

// forgetIfPurged drops sn from the term's index when HUB_PRESENCE holds no
// record of it any more: called when its registry entry is deleted. The
// check runs on its own task; a record the index took meanwhile keeps the
// device.
func (d *directory) forgetIfPurged(t *dirTerm, sn string) {
	d.mu.Lock()
	dev := t.idx.bySN[sn]
	recorded := d.idx == t.idx && dev != nil && dev.recorded
	var seq uint64
	if recorded {
		seq = dev.seq
	}
	d.mu.Unlock()
	if !recorded {
		return
	}
	d.srv.goTask(func() {
		subj, err := subjects.Presence(sn)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(t.ctx, forgetTimeout)
		defer cancel()
		st, err := d.srv.js.Stream(ctx, StreamPresence)
		if err == nil {
			_, err = st.GetLastMsgForSubject(ctx, subj)
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			if err != nil {
				d.srv.log.Debug("directory: presence check after a registry delete failed", "sn", sn, "err", err)
			}
			return
		}
		d.mu.Lock()
		if d.idx == t.idx {
			t.idx.forget(sn, seq)
		}
		d.mu.Unlock()
	})
}

// forget stops listing sn, whose presence records were purged, unless a
// record newer than seq came since. A registered device stays counted.
func (x *dirIndex) forget(sn string, seq uint64) {
	d := x.bySN[sn]
	if d == nil || !d.recorded || d.seq != seq {
		return
	}
	x.count(d, -1)
	d.recorded, d.online, d.node, d.since, d.seq = false, false, "", 0, 0
	if x.built {
		if i, found := slices.BinarySearchFunc(x.sorted, sn, func(e *dirDevice, sn string) int { return strings.Compare(e.sn, sn) }); found {
			x.sorted = slices.Delete(x.sorted, i, i+1)
		}
	}
	if !d.registered {
		delete(x.bySN, sn)
		return
	}
	x.count(d, 1)
}
