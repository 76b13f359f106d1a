// Package dcs keeps a node's data centre in touch with the others: it
// learns which data centres exist (each node announces its own on core
// NATS, signed), and it keeps the hub's aggregates, the names of
// PROTOCOL §6 in this node's JetStream, sourcing every data centre's own
// buckets and streams. After a partition heals it re-adds the sources of
// the data centre that came back, so that aggregates converge in seconds
// instead of waiting out the server's source retry back-off.
//
// Each node runs one Engine, started once its own stores exist:
//
//	e, err := dcs.Start(ctx, dcs.Config{
//		Conn: nc, JS: js, DC: "east", Node: nodeID,
//		Views: []dcs.View{
//			dcs.KeyValueView(jetstream.KeyValueConfig{Bucket: "hub_presence"},
//				func(dc string) string { return "hub_presence_" + dc }, false),
//		},
//		Sign: sign, Verify: verify, // the hub's control signing
//	})
//	defer e.Stop()
//	e.DCs() // [{Name: east, Self: true, Present: true} {Name: west, Domain: west, Present: true}]
//
// Announces: every Interval (1 s) a node publishes {dc, domain, node, at}
// on subjects.DCHello, signed; a data centre not heard for AbsentAfter
// intervals is absent. Views: at Start, when a data centre is first
// learnt, and every Recheck (30 s), each view gets the sources of every
// known data centre (jscreate.WithSources: sources others added are
// kept); none is ever removed. Heal: when a data centre comes back after
// being absent, one node of each data centre drops its source from every
// view and adds it back, so that the view catches up at once.
package dcs
