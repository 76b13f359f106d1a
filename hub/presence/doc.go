// Package presence keeps device presence in JetStream, exactly once per
// change. It knows no session and no server.
//
// # Exactly once
//
// Each device's records alternate strictly: connected, offline,
// connected... A record is appended only after the device's last one, as
// read from the stream (a compare-and-set on the subject's last
// sequence), and only when that last one says otherwise; a failed check
// reads the last record again and decides again. Who publishes a record
// is decided so that there is one per change:
//   - connected: the node whose create-only write of the entry succeeded;
//     a device that comes back while its entry still exists overwrites it
//     and nothing is published, unless its last record says offline;
//   - offline (closed, timeout, kicked): the node that held the session,
//     once the grace has passed and the entry still names that session;
//   - node_lost: the live node with the smallest id, for every device of
//     the lost node's index whose entry still names that node, once the
//     loss is confirmed (its own liveness writes have succeeded for a
//     node TTL and a read finds the lost node's entry absent: a leader
//     election of hub_nodes is no loss, see confirmLost); records carry a
//     Nats-Msg-Id, so that two nodes that briefly disagree on who is the
//     smallest store one.
//
// An offline record is stored before the entry is removed, so a device
// that comes back must wait for the removal before its create can
// succeed: its connected record always follows the offline one. Every
// write whose outcome is unknown is followed by a read: the next attempt
// looks at the entry and the last record as they are, and does what is
// left.
//
// # The tracker
//
// The hub hands its Tracker the device sessions that authenticate and
// end (Connected, Disconnected) and gets back each record stored
// (Config.Stored). Open takes every dependency explicitly (JetStream,
// node id, TTLs, clock, logger, a task spawner that refuses work after
// stop, a record sink), so the tracker is tested with two of them on one
// in-process server and a fake clock.
//
// Files by concern: tracker.go (Open, Stop, the node's devices),
// config.go (dependencies), entries.go (connect, grace, expiry),
// reassert.go (putting back what NATS lost), records.go (the
// compare-and-set append), nodes.go (node liveness and node_lost),
// lost.go (node_lost, pipelined), index.go and nodeindex.go (the node
// index), schedule.go and refresh.go (refresh scheduling), retry.go and
// steps.go (retried work, device locks), codec.go (the entry codec,
// fuzzed), batch.go (batched reads), buckets.go and watch.go (stores),
// known.go (a device's type and group).
//
// Example, wiring a tracker (hub/presence.go wires the hub's):
//
//	tr, err := presence.Open(ctx, presence.Config{
//		JS: js, Conn: nc, NodeID: "node-1",
//		PresenceTTL: 2 * time.Minute, NodeTTL: 15 * time.Second, OfflineGrace: 30 * time.Second,
//		RunCtx: runCtx, Go: tasks.Go,
//		Stored: func(r schema.PresenceRecord, seq uint64, data []byte) { publish(r, data) },
//	})
//	if err != nil {
//		return err
//	}
//	defer tr.Stop(ctx)
//	err = tr.Connected(ctx, presence.Device{SN: "D-1", Session: "s1"})
//	tr.Disconnected("D-1", "s1", schema.ReasonClosed)
package presence
