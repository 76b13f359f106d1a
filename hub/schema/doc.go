// Package schema is the NATS-side contract of the hub: the names of its
// KV buckets, streams and headers, the JSON of its KV entries, records,
// push and command bodies, and the device views of listings and
// snapshots. Nodes, backends and tools such as hubctl share it.
//
// It is a leaf: it imports the standard library and the subjects package
// only, never a NATS client, so that a tool that only reads or writes the
// bus's data can depend on it without the hub.
//
//	var e schema.PresenceEntry
//	ent, err := kv.Get(ctx, sn) // bucket schema.BucketPresence
//	if err == nil && json.Unmarshal(ent.Value(), &e) == nil {
//		fmt.Println(sn, "online on", e.Node, "since", e.Since)
//	}
//
//	body := schema.PushBody{Service: "/push/notice", Values: json.RawMessage(`{"text":"hi"}`)}
//	if err := body.Check(); err != nil { ... }
//	data, _ := json.Marshal(body) // publish on a push subject
package schema
