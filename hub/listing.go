package hub

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
)

// Device listings: /admin/devices and the /admin/subscribe snapshot, both
// ordered by serial number and cut into pages by count (limit) and by bytes
// (the answer cap and the session's listing bucket). A page that is not the
// last carries "next", a cursor that /admin/devices continues from. Which
// devices a page holds comes from the directory (directory.go), or, for a
// snapshot of serial numbers only, from JetStream itself; their views are
// then read by direct gets (deviceviews.go). No node keeps the fleet in
// memory.

const (
	defaultListLimit = 1000
	maxListLimit     = 10000
)

// listFilter is what a listing matches, besides the caller's groups, which
// are applied on every page and never carried in a cursor.
type listFilter struct {
	// /admin/devices filters.
	Type   *string `json:"t,omitempty"`
	Group  *string `json:"g,omitempty"`
	Online *bool   `json:"o,omitempty"`
	// A subscribe snapshot's selectors: when Sel is set a device must
	// match one of them.
	Sel    bool     `json:"s,omitempty"`
	All    bool     `json:"all,omitempty"`
	SNs    []string `json:"sns,omitempty"` // sorted
	Types  []string `json:"ts,omitempty"`
	Groups []string `json:"gs,omitempty"`
}

// snapshotFilter is the filter of a snapshot of selectors as
// subscribeArgs.parse returns them.
func snapshotFilter(sels []string) listFilter {
	f := listFilter{Sel: true}
	for _, sel := range sels {
		switch {
		case sel == "all":
			f.All = true
		case strings.HasPrefix(sel, "sn:"):
			f.SNs = append(f.SNs, sel[len("sn:"):])
		case strings.HasPrefix(sel, "type:"):
			f.Types = append(f.Types, sel[len("type:"):])
		case strings.HasPrefix(sel, "group:"):
			f.Groups = append(f.Groups, sel[len("group:"):])
		}
	}
	if f.All { // all of them: the others add nothing
		f.SNs, f.Types, f.Groups = nil, nil, nil
	}
	slices.Sort(f.SNs)
	f.SNs = slices.Compact(f.SNs)
	return f
}

// sameArgs reports whether the /admin/devices filters of f and g agree.
func (f *listFilter) sameArgs(g *listFilter) bool {
	eq := func(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
	return eq(f.Type, g.Type) && eq(f.Group, g.Group) &&
		(f.Online == nil && g.Online == nil || f.Online != nil && g.Online != nil && *f.Online == *g.Online)
}

// matcher is a listFilter compiled for one listing by one caller.
type matcher struct {
	f                   *listFilter
	groups              []string // the caller's
	sns, types, inGroup map[string]bool
}

func (f *listFilter) compile(callerGroups []string) *matcher {
	set := func(xs []string) map[string]bool {
		m := make(map[string]bool, len(xs))
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	return &matcher{f: f, groups: callerGroups, sns: set(f.SNs), types: set(f.Types), inGroup: set(f.Groups)}
}

func (mt *matcher) match(sn, typ, group string, online bool) bool {
	f := mt.f
	if !auth.CanSee(mt.groups, group) ||
		f.Type != nil && *f.Type != typ ||
		f.Group != nil && *f.Group != group ||
		f.Online != nil && *f.Online != online {
		return false
	}
	return !f.Sel || f.All || mt.sns[sn] || mt.types[typ] || mt.inGroup[group]
}

// cursor is where a listing goes on: its filter, its page size, and the
// last serial number listed.
type cursor struct {
	V      int        `json:"v"`
	After  string     `json:"a"`
	Limit  int        `json:"l"`
	Filter listFilter `json:"f"`
}

const cursorVersion = 1

// cursorKey signs cursors: derived from the master secret, so that every
// node of the hub takes the cursors of the others and no other hub's.
func cursorKey(master []byte) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("list-cursor:v1"))
	return m.Sum(nil)
}

// cursorMAC is the tag of a cursor's payload, truncated to 128 bits.
func cursorMAC(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)[:16]
}

// encodeCursor renders c as "1.<payload>.<tag>", both base64url: opaque to
// clients, and refused when altered or made by another hub.
func (srv *Server) encodeCursor(c *cursor) string {
	c.V = cursorVersion
	payload, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("hub: cursor: %v", err)) // only strings, ints and bools
	}
	b64 := base64.RawURLEncoding
	return "1." + b64.EncodeToString(payload) + "." + b64.EncodeToString(cursorMAC(cursorKey(srv.cfg.MasterSecret), payload))
}

// errBadCursor answers a cursor this hub did not make.
var errBadCursor = wire.Errorf(wire.CodeBadRequest, "args.cursor: not a cursor of this hub's listings (malformed, altered or foreign)")

func (srv *Server) decodeCursor(s string) (*cursor, *wire.Error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != "1" {
		return nil, errBadCursor
	}
	b64 := base64.RawURLEncoding
	payload, err1 := b64.DecodeString(parts[1])
	tag, err2 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || !hmac.Equal(tag, cursorMAC(cursorKey(srv.cfg.MasterSecret), payload)) {
		return nil, errBadCursor
	}
	var c cursor
	if err := json.Unmarshal(payload, &c); err != nil || c.V != cursorVersion ||
		c.Limit < 1 || c.Limit > maxListLimit || c.After != "" && !auth.ValidSerial(c.After) {
		return nil, errBadCursor
	}
	return &c, nil
}

type devicesArgs struct {
	Type   *string `json:"type"`
	Group  *string `json:"group"`
	Online *bool   `json:"online"`
	Limit  *int    `json:"limit"`
	Cursor *string `json:"cursor"`
}

// listLimit checks a listing's limit argument; 0 means not given.
func listLimit(limit *int) (int, *wire.Error) {
	if limit == nil {
		return 0, nil
	}
	if *limit < 1 || *limit > maxListLimit {
		return 0, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.limit: must be 1 to %d", maxListLimit))
	}
	return *limit, nil
}

// serveDevices lists the known devices the caller may see, one page at a
// time, from the directory (no scan of the buckets).
func (srv *Server) serveDevices(s *Session, m *wire.Message) (any, *wire.Error) {
	var a devicesArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	limit, werr := listLimit(a.Limit)
	if werr != nil {
		return nil, werr
	}
	c := &cursor{Limit: defaultListLimit, Filter: listFilter{Type: a.Type, Group: a.Group, Online: a.Online}}
	if a.Cursor != nil && *a.Cursor != "" {
		given := c.Filter
		if c, werr = srv.decodeCursor(*a.Cursor); werr != nil {
			return nil, werr
		}
		// Filters left out are the cursor's; filters given must be its.
		if (a.Type != nil || a.Group != nil || a.Online != nil) && !given.sameArgs(&c.Filter) {
			return nil, wire.Errorf(wire.CodeBadRequest, "args.cursor: was made for another type, group or online filter")
		}
	}
	if limit != 0 {
		c.Limit = limit
	}
	if !m.HasRequestID {
		return nil, nil // a success without request_id is not answered: build nothing
	}
	values, werr := srv.listPage(s, m, c)
	if werr == errNoRoom {
		return nil, srv.listRefused(s)
	}
	return values, werr
}

// snapshot is the answer of /admin/subscribe for sels: the first page of
// the devices they match. When the session's listing bucket is empty, or
// no directory answers, it holds no device and a next that lists them all.
func (srv *Server) snapshot(s *Session, m *wire.Message, sels []string, limit int) (any, *wire.Error) {
	if !m.HasRequestID {
		return nil, nil
	}
	if limit == 0 {
		limit = defaultListLimit
	}
	c := &cursor{Limit: limit, Filter: snapshotFilter(sels)}
	values, werr := srv.listPage(s, m, c)
	switch {
	case werr == errNoRoom:
		srv.admit.refuse(refusedListBytes)
	case werr != nil && werr.Code == wire.CodeUnavailable:
		// No directory (or JetStream) to list from just now: the
		// subscription is in place all the same, and the listing is left
		// to /admin/devices, as when the bucket is empty. (Counted in
		// fleethub_directory_unavailable_total.)
	default:
		return values, werr
	}
	return json.RawMessage(devicesOpen + "]" + nextOpen + srv.encodeCursor(c) + nextClose + "}"), nil
}

// snapshotLimit reads the optional limit of /admin/subscribe (0: not given).
func snapshotLimit(args json.RawMessage) (int, *wire.Error) {
	var a struct {
		Limit *int `json:"limit"`
	}
	if werr := wire.DecodeArgs(args, &a); werr != nil {
		return 0, werr
	}
	return listLimit(a.Limit)
}

// errNoRoom is listPage's report that not one device fitted the session's
// listing bucket.
var errNoRoom = &wire.Error{Code: wire.CodeRateLimited, Msg: "no room"}

// listRefused answers a listing refused for the session's listing bucket,
// telling the client when to retry.
func (srv *Server) listRefused(s *Session) *wire.Error {
	srv.admit.refuse(refusedListBytes)
	want := min(srv.cfg.MaxAnswerBytes, srv.cfg.ListBytesBurst)
	wait := s.cost.list.wait(srv.cfg.Now(), srv.cfg.ListBytesRate, srv.cfg.ListBytesBurst, want)
	values, _ := json.Marshal(map[string]int64{"retry_after_ms": max(1, wait.Milliseconds())})
	return &wire.Error{Code: wire.CodeRateLimited, Msg: "too many device listing bytes; retry later", Values: values}
}

// The fixed parts of a listing's values.
const (
	devicesOpen  = `{"devices":[`
	devicesClose = `]}`
	nextOpen     = `,"next":"`
	nextClose    = `"`
)

// listPage builds one page of the listing c describes, for the caller of
// m: at most c.Limit devices after c.After, as many as fit the answer cap
// and the session's listing bucket, and next when more follow. It is
// errNoRoom when the bucket cut the page to nothing, 413 when the cap did.
func (srv *Server) listPage(s *Session, m *wire.Message, c *cursor) (json.RawMessage, *wire.Error) {
	mt := c.Filter.compile(s.Identity().Groups)
	// Room for the cursor: the longest a serial number can be as After.
	longest := *c
	longest.After = strings.Repeat("x", maxSerialLen)
	reserve := len(devicesOpen) + len(devicesClose) + len(nextOpen) + len(srv.encodeCursor(&longest)) + len(nextClose)
	// A listing is answered on the read goroutine: it joins the answers of
	// its frame, and takes only what room the frame has left.
	capRoom := srv.valuesBudget(m) - (srv.cfg.MaxAnswerBytes - s.frameRoom) - reserve
	if capRoom < 0 {
		return nil, srv.errAnswerTooLarge()
	}
	now := srv.cfg.Now()
	bucketRoom := s.cost.list.available(now, srv.cfg.ListBytesRate, srv.cfg.ListBytesBurst) - reserve
	if bucketRoom <= 0 {
		return nil, errNoRoom
	}
	room := min(capRoom, bucketRoom)

	ctx, cancel := context.WithTimeout(srv.runCtx, listTimeout)
	defer cancel()
	entries, pre, more, werr := srv.pageEntries(ctx, mt, c, s.Identity().Groups)
	if werr != nil {
		return nil, werr
	}
	// The views are read a chunk at a time, so that a page cut short by
	// bytes (large statuses) reads little more than it answers.
	out := make([]byte, 0, min(room, 64<<10)+reserve)
	out = append(out, devicesOpen...)
	used, n, last := 0, 0, ""
	for chunk := range slices.Chunk(entries, viewChunk) {
		views, err := srv.deviceViews(ctx, chunk, pre)
		if err != nil {
			srv.dir.unavailable.WithLabelValues(dirViews).Inc()
			srv.warnLimited("device listing: device views not read", "err", err)
			return nil, errViewsUnavailable
		}
		full := false
		for i := range views {
			b, err := json.Marshal(&views[i])
			if err != nil {
				// A status that is not JSON (a hostile writer on
				// HUB_STATUS): the device is listed without it.
				srv.warnLimited("device listing: status that is not JSON left out", "sn", views[i].SN)
				v := views[i]
				v.Status, v.StatusAt = json.RawMessage("null"), nil
				if b, err = json.Marshal(&v); err != nil {
					return nil, wire.Errorf(wire.CodeInternal, "internal error")
				}
			}
			sep := min(n, 1)
			if used+sep+len(b) > room {
				if n == 0 {
					if used+len(b) > capRoom {
						return nil, srv.errAnswerTooLarge()
					}
					return nil, errNoRoom
				}
				more, full = true, true
				break
			}
			if sep > 0 {
				out = append(out, ',')
			}
			out = append(out, b...)
			used += sep + len(b)
			n++
			last = views[i].SN
		}
		if full {
			break
		}
	}
	out = append(out, ']')
	if more {
		next := *c
		if n > 0 {
			next.After = last
		}
		// Serial numbers already passed need not be carried on.
		i, found := slices.BinarySearch(next.Filter.SNs, next.After)
		if found {
			i++
		}
		next.Filter.SNs = next.Filter.SNs[i:]
		out = append(out, nextOpen...)
		out = append(out, srv.encodeCursor(&next)...)
		out = append(out, nextClose...)
	}
	out = append(out, '}')
	s.cost.list.spend(now, srv.cfg.ListBytesRate, len(out))
	return out, nil
}

// maxSerialLen is the longest valid serial number (auth.ValidSerial).
const maxSerialLen = 64

// listTimeout bounds the reads of one page: the directory's answer (which
// may wait dirWait for one to be elected or loaded) and the direct gets.
const listTimeout = dirWait + 3*time.Second

// viewChunk is how many device views a page reads at a time.
const viewChunk = 1000

// errViewsUnavailable answers a page whose device views could not be read.
var errViewsUnavailable = wire.Errorf(wire.CodeUnavailable, "device views unavailable (JetStream did not answer); retry later")

// dirViews labels the pages whose views could not be read.
const dirViews = "views"

// snsOnly reports whether f is a snapshot of serial numbers alone.
func (f *listFilter) snsOnly() bool {
	return f.Sel && !f.All && len(f.Types) == 0 && len(f.Groups) == 0
}

// pageEntries returns the devices of the page c describes, at most
// c.Limit, and whether more follow: for serial numbers alone straight from
// JetStream, otherwise from the directory, asked again while its answers
// are cut short by their byte limit.
func (srv *Server) pageEntries(ctx context.Context, mt *matcher, c *cursor, groups []string) ([]dirEntry, *viewReads, bool, *wire.Error) {
	if c.Filter.snsOnly() {
		i, found := slices.BinarySearch(c.Filter.SNs, c.After)
		if found {
			i++
		}
		es, pre, more, ok, err := srv.explicitEntries(ctx, mt, c.Filter.SNs[i:], c.Limit)
		if err != nil {
			srv.dir.unavailable.WithLabelValues(dirViews).Inc()
			srv.warnLimited("device listing: presence not read", "err", err)
			return nil, nil, false, errViewsUnavailable
		}
		if ok {
			return es, pre, more, nil
		}
	}
	req := dirListRequest{Filter: c.Filter, Groups: groups, After: c.After, Limit: c.Limit}
	var es []dirEntry
	for {
		r, werr := srv.askDirectory(ctx, srv.layout.DirList(), &req)
		if werr != nil {
			return nil, nil, false, werr
		}
		es = append(es, r.D...)
		if !r.More || len(es) >= c.Limit || len(r.D) == 0 {
			if len(es) > c.Limit {
				es = es[:c.Limit]
			}
			return es, nil, r.More, nil
		}
		req.After, req.Limit = es[len(es)-1].SN, c.Limit-len(es)
	}
}
