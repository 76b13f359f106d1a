package hub

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
)

// /admin/nodes lists the live nodes, from the hub_nodes bucket, for
// dashboards that cannot read KV themselves: the keys first, then every
// entry in one batch of direct gets.

// maxNodes bounds the /admin/nodes answer.
const maxNodes = 1000

// nodesTimeout bounds one /admin/nodes read.
const nodesTimeout = 5 * time.Second

// NodeView is a node as /admin/nodes shows it.
type NodeView struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Since    int64  `json:"since"`
	Sessions int    `json:"sessions"`
}

func (srv *Server) serveNodes(s *Session, m *wire.Message) (any, *wire.Error) {
	var a struct{}
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	if srv.busDown() {
		return nil, errBusDown
	}
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		nodes, err := srv.Nodes(ctx)
		if err != nil {
			srv.warnLimited("nodes read failed", "err", err)
			return nil, wire.Errorf(wire.CodeUnavailable, "node list unavailable")
		}
		return map[string]any{"nodes": nodes}, nil
	})
}

// Nodes is the live nodes, sorted by id, at most maxNodes of them.
func (srv *Server) Nodes(ctx context.Context) ([]NodeView, error) {
	ctx, cancel := context.WithTimeout(ctx, nodesTimeout)
	defer cancel()
	kv, err := srv.js.KeyValue(ctx, schema.BucketNodes)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k := range lister.Keys() {
		if subjects.ValidToken(k) {
			ids = append(ids, k)
		}
	}
	_ = lister.Stop()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.Sort(ids)
	ids = ids[:min(len(ids), maxNodes)]
	subjs := make([]string, 0, len(ids))
	for _, id := range ids {
		if s, err := subjects.KVKey(schema.BucketNodes, id); err == nil {
			subjs = append(subjs, s)
		}
	}
	got, err := srv.lastMessages(ctx, []lastOf{{"KV_" + schema.BucketNodes, subjs}})
	if err != nil {
		return nil, err
	}
	out := make([]NodeView, 0, len(ids))
	for _, id := range ids {
		s, err := subjects.KVKey(schema.BucketNodes, id)
		if err != nil {
			continue
		}
		var e schema.NodeEntry
		if b, ok := got[0][s]; ok && json.Unmarshal(b, &e) == nil {
			out = append(out, NodeView{ID: id, Addr: e.Addr, Since: e.Since, Sessions: e.Sessions})
		}
	}
	return out, nil
}
