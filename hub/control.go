package hub

import (
	"strconv"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Node-to-node control messages (hub.ctl.takeover, the directory's
// requests and replies) are signed: anything that may publish on the bus,
// or make the server publish for it (a JetStream push consumer delivers
// to any subject its creator names), could otherwise close any device's
// session or answer listings for the directory. Bus permissions keep
// backends off hub.ctl.* (docs/nats-accounts.conf); the signature makes
// the node check for itself, with a key only holders of the master secret
// have. A message is signed over what binds it (its subject, or for a
// reply the request's signature), its signing time and its body; one
// signed more than controlMaxAge away from this node's clock is stale,
// which bounds replays.

// controlMaxAge is how far a control message's signing time may be from
// the receiver's clock. Nodes' clocks agree far better; a message takes
// milliseconds.
const controlMaxAge = 30 * time.Second

// Reasons a control message is refused, the labels of
// fleethub_control_refused_total.
const (
	ctlUnsigned = "unsigned"      // no signature or signing time
	ctlBadSig   = "bad_signature" // a signature that does not verify
	ctlStale    = "stale"         // signed too far from this node's clock
)

// control signs and checks control messages.
type control struct {
	key     []byte
	refused *prometheus.CounterVec
}

func newControl(masterSecret []byte, reg prometheus.Registerer) *control {
	c := &control{
		key: auth.ControlKey(masterSecret),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "fleethub", Name: "control_refused_total",
			Help: "Node-to-node control messages (takeover, directory) dropped, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{ctlUnsigned, ctlBadSig, ctlStale} {
		c.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(c.refused)
	}
	return c
}

// sign sets m's signature headers, binding it to bind.
func (c *control) sign(m *nats.Msg, bind string) { signControl(c.key, m, bind) }

// signControl sets m's signature headers with key, binding it to bind.
func signControl(key []byte, m *nats.Msg, bind string) {
	at := time.Now().UnixMilli()
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(schema.HeaderSigAt, strconv.FormatInt(at, 10))
	m.Header.Set(schema.HeaderSig, auth.SignControl(key, bind, at, m.Data))
}

// message is a control message on subject, signed.
func (c *control) message(subject string, body []byte) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: body}
	c.sign(m, subject)
	return m
}

// reply is the signed answer to the control request req.
func (c *control) reply(req *nats.Msg, body []byte) *nats.Msg {
	m := &nats.Msg{Subject: req.Reply, Data: body}
	c.sign(m, auth.ReplyBinding(req.Header.Get(schema.HeaderSig)))
	return m
}

// check returns "" when m is signed for bind, within controlMaxAge of
// now, else the reason it is refused.
func (c *control) check(m *nats.Msg, bind string) string { return checkControl(c.key, m, bind) }

// checkControl is check with key.
func checkControl(key []byte, m *nats.Msg, bind string) string {
	sig, atS := m.Header.Get(schema.HeaderSig), m.Header.Get(schema.HeaderSigAt)
	if sig == "" || atS == "" {
		return ctlUnsigned
	}
	at, err := strconv.ParseInt(atS, 10, 64)
	if err != nil || !auth.VerifyControl(key, bind, at, m.Data, sig) {
		return ctlBadSig
	}
	if d := time.Since(time.UnixMilli(at)); d > controlMaxAge || d < -controlMaxAge {
		return ctlStale
	}
	return ""
}

// controlOK checks a control message for bind; one refused is counted
// and logged at a bounded rate, and the caller drops it.
func (srv *Server) controlOK(m *nats.Msg, bind, what string) bool {
	reason := srv.ctl.check(m, bind)
	if reason == "" {
		return true
	}
	srv.ctl.refused.WithLabelValues(reason).Inc()
	srv.warnLimited("control message refused", "what", what, "subject", m.Subject, "reason", reason)
	return false
}
