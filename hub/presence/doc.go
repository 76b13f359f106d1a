// Package presence holds the parts of device presence that know no
// session and no server: the entry codec, refresh scheduling, and the
// retry and per-device locking that presence work runs under. The hub's
// tracker (hub/presence*.go) uses them; it is moving here piece by piece.
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
//     the lost node's index whose entry still names that node; records
//     carry a Nats-Msg-Id, so that two nodes that briefly disagree on who
//     is the smallest store one.
//
// An offline record is stored before the entry is removed, so a device
// that comes back must wait for the removal before its create can
// succeed: its connected record always follows the offline one. Every
// write whose outcome is unknown is followed by a read: the next attempt
// looks at the entry and the last record as they are, and does what is
// left.
//
// Example, the refresh queue:
//
//	var q presence.Queue[*device]
//	q.Push(presence.Due[*device]{At: next.UnixNano(), Item: d})
//	for q.Len() > 0 && q.Peek().At <= now.UnixNano() {
//		it := q.Pop()
//		refresh(it.Item)
//	}
package presence
