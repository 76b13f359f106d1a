package hub

import (
	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/ctlmsg"
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

// Reasons a control message is refused, the labels of
// fleethub_control_refused_total.
const (
	ctlUnsigned = ctlmsg.Unsigned
	ctlBadSig   = ctlmsg.BadSig
	ctlStale    = ctlmsg.Stale
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
func (c *control) sign(m *nats.Msg, bind string) { ctlmsg.Sign(c.key, m, bind) }

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

// check returns "" when m is signed for bind, within ctlmsg.MaxAge of
// now, else the reason it is refused.
func (c *control) check(m *nats.Msg, bind string) string { return ctlmsg.Check(c.key, m, bind) }

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
