package embedded

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The embedded server in a cluster (a conf with a cluster block, hub
// nodes that each embed one of the servers). Such a server cannot serve
// JetStream alone: its meta group (the Raft group that places streams)
// needs a leader elected by a majority of the servers. Start therefore
// waits only for what the server has by itself (its listeners), and the
// node's readiness asks JetStreamReady.

// Bounds of JetStreamReady.
const (
	// peerSilence is how long the meta leader may go without hearing from
	// a peer before the peer no longer counts towards its quorum. Peers
	// answer the leader's heartbeat every second; the leader itself only
	// steps down 10 to 20 s after losing its quorum, too late for
	// readiness (503 within 15 s of the change).
	peerSilence = 5 * time.Second
	// readyCacheFor is how long one answer of JetStreamReady is reused, so
	// that /readyz probes, however many, look at JetStream's state at most
	// a few times a second.
	readyCacheFor = 500 * time.Millisecond
)

// ErrNoQuorum is JetStreamReady's answer while the server's JetStream
// cluster has no leader this server follows, or the leader is this server
// and has lost its majority.
var ErrNoQuorum = errors.New("embedded: JetStream has no quorum")

// readyCache holds JetStreamReady's last answer.
type readyCache struct {
	mu  sync.Mutex // guards at, err and joined
	at  time.Time
	err error
	// joined is set the first time every stream and consumer of the
	// node's account with a replica on this server was current.
	joined bool
}

// JetStreamReady reports whether JetStream can serve the node, from the
// server's own state: nil for a server outside a cluster once JetStream
// is on; in a cluster, nil only while the meta group has a leader that
// this server is current with, once this server's replicas of the
// account's streams and consumers have caught up after its start, and,
// when this server is the meta leader, while a majority of the peers
// answered within the last 5 s. Otherwise the error wraps ErrNoQuorum and
// says why.
//
// It makes no request and takes a few of the server's locks (at most some
// 10 ms while the server applies a backlog; until the replicas have
// caught up, a walk over the account's streams and consumers); answers
// are reused for 500 ms. A node's /readyz can call it on every probe.
func (s *Server) JetStreamReady() error {
	s.ready.mu.Lock()
	defer s.ready.mu.Unlock()
	if now := time.Now(); s.ready.at.IsZero() || now.Sub(s.ready.at) >= readyCacheFor {
		s.ready.err = s.jetStreamReady()
		s.ready.at = now
	}
	return s.ready.err
}

// jetStreamReady is JetStreamReady without the cache; s.ready.mu is held.
func (s *Server) jetStreamReady() error {
	if !s.JetStreamEnabled() {
		return fmt.Errorf("%w: JetStream is off", ErrNoQuorum)
	}
	if !s.JetStreamIsClustered() {
		return nil
	}
	// The meta layer: a leader known, and this server current with it
	// (a follower that has not heard from the leader for 2 s is not).
	if h := s.Healthz(&server.HealthzOptions{JSMetaOnly: true}); h.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s", ErrNoQuorum, h.Error)
	}
	if !s.ready.joined {
		// A server that (re)joins has to catch its replicas up with
		// their leaders before writes from this node reach them: until
		// then a bucket write (a device's nonce) fails. Once caught up,
		// a replica that falls behind later (a leader election) does not
		// make the node unready: the stores' own check and the quorum
		// below speak for that.
		switch h := s.Healthz(&server.HealthzOptions{Account: s.accountName()}); h.StatusCode {
		case http.StatusOK:
			s.ready.joined = true
		case http.StatusNotFound:
			// The account has no stream yet (a fresh cluster, before
			// the hub's start): nothing to catch up; look again later.
		default:
			return fmt.Errorf("%w: not caught up yet: %s", ErrNoQuorum, h.Error)
		}
	}
	if !s.JetStreamIsLeader() {
		return nil
	}
	jsz, err := s.Jsz(&server.JSzOptions{})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoQuorum, err)
	}
	if jsz.Meta == nil {
		return fmt.Errorf("%w: no meta group", ErrNoQuorum)
	}
	heard := 1 // the leader itself
	for _, p := range jsz.Meta.Replicas {
		if !p.Offline && p.Active < peerSilence {
			heard++
		}
	}
	if heard < jsz.Meta.QuorumNeeded {
		return fmt.Errorf("%w: the meta leader has heard from %d of %d servers within %s, %d needed",
			ErrNoQuorum, heard, jsz.Meta.Size, peerSilence, jsz.Meta.QuorumNeeded)
	}
	return nil
}

// accountName is the node's account as nats-server names it.
func (s *Server) accountName() string {
	if s.account == "" {
		return GlobalAccount
	}
	return s.account
}
