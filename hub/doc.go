// Package hub is the transport-free core of a node: sessions, the services
// they call, the NATS interests that carry pushes to them and the commands
// and backend requests that cross the bus.
//
// A transport (the WebSocket node) hands each connection to Open and feeds
// it frames; the hub answers through the Transport interface and never
// imports net/http or a WebSocket library, so it is tested with an
// in-memory transport:
//
//	srv, err := hub.New(hub.Config{Conn: nc, MasterSecret: secret})
//	if err != nil { ... }
//	if err := srv.Start(ctx); err != nil { ... }
//	s := srv.Open(transport, "127.0.0.1:50000")
//	s.HandleFrame([]byte(`{"op":"request","service":"/ping","request_id":"1"}`))
//	...
//	s.Gone(schema.ReasonClosed)
//
// Pushes are routed by subject: the node subscribes once per interest (a
// device, a user, a role, a type, a group, everyone) that one of its
// sessions has, and an arriving push is encoded once and queued to only the
// sessions of that interest.
package hub
