package hub

import "context"

// followStreams keeps the status and event streams, which are stores of
// their own: created again when found missing. The node reads neither:
// history and backends read them, and the records the node's sessions
// watch reach it on their watch subjects (watch.go), so that what a node
// receives follows what its sessions watch, never the fleet.
func (srv *Server) followStreams(ctx, runCtx context.Context) error {
	for _, sc := range dataStreams(srv) {
		st := &store{
			name: sc.Name, stream: sc.Name,
			create: func(ctx context.Context) error { return createStream(ctx, srv, sc) },
		}
		if err := srv.stores.add(ctx, runCtx, st); err != nil {
			return err
		}
	}
	return nil
}
