// Package node is the WebSocket and HTTP face of a hub node: melody
// sessions on GET /ws, adapted to the transport-free hub, plus the plain
// HTTP routes (/healthz, /metrics, POST /api/login) on a chi router.
//
//	n, err := node.New(node.Config{Hub: srv, Listen: "127.0.0.1:8080"})
//	if err != nil { ... }
//	err = n.Run(ctx) // serves until ctx ends, then shuts down in order
package node
