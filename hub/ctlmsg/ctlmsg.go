// Package ctlmsg signs and checks the nodes' control messages (takeover,
// directory, data centre announces, kicks) with the control key of the
// master secret (auth.ControlKey), and builds the kick that /admin/kick and
// `hubctl kick` send. A message is signed over what binds it (its subject,
// or for a reply the request's signature), its signing time and its body;
// one signed more than MaxAge away from the receiver's clock is stale,
// which bounds replays.
package ctlmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
)

// MaxAge is how far a control message's signing time may be from the
// receiver's clock. Nodes' clocks agree far better; a message takes
// milliseconds.
const MaxAge = 30 * time.Second

// Reasons a control message is refused, the labels of
// fleethub_control_refused_total.
const (
	Unsigned = "unsigned"      // no signature or signing time
	BadSig   = "bad_signature" // a signature that does not verify
	Stale    = "stale"         // signed too far from this node's clock
)

// Sign sets m's signature headers with key, binding it to bind.
func Sign(key []byte, m *nats.Msg, bind string) {
	at := time.Now().UnixMilli()
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(schema.HeaderSigAt, strconv.FormatInt(at, 10))
	m.Header.Set(schema.HeaderSig, auth.SignControl(key, bind, at, m.Data))
}

// Check returns "" when m is signed with key for bind, within MaxAge of
// now, else the reason it is refused.
func Check(key []byte, m *nats.Msg, bind string) string {
	sig, atS := m.Header.Get(schema.HeaderSig), m.Header.Get(schema.HeaderSigAt)
	if sig == "" || atS == "" {
		return Unsigned
	}
	at, err := strconv.ParseInt(atS, 10, 64)
	if err != nil || !auth.VerifyControl(key, bind, at, m.Data, sig) {
		return BadSig
	}
	if d := time.Since(time.UnixMilli(at)); d > MaxAge || d < -MaxAge {
		return Stale
	}
	return ""
}

// KickBody is a kick's signed body.
type KickBody struct {
	Groups []string `json:"groups,omitempty"` // the admin's; nil: every group
	All    bool     `json:"all,omitempty"`    // no group restriction
}

// KickBinding is what a kick on subj is signed for: not the subject alone,
// so that no other control message on it could pass for a kick.
func KickBinding(subj string) string { return "kick " + subj }

// KickMessage is the kick of the device whose command subject is subj,
// signed with the control key, as a node and `hubctl kick` send it;
// groups, when not nil, restricts it to devices of those groups.
func KickMessage(key []byte, subj string, groups []string) *nats.Msg {
	body, _ := json.Marshal(KickBody{Groups: groups, All: groups == nil})
	msg := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderKick, "1")
	Sign(key, msg, KickBinding(subj))
	return msg
}

// KickAnswer checks that resp, the answer to the kick req, is signed by a
// node (with the control key, bound to req), and returns it: Code 0 when
// the device was kicked.
func KickAnswer(key []byte, req, resp *nats.Msg) (schema.Reply, error) {
	if reason := Check(key, resp, auth.ReplyBinding(req.Header.Get(schema.HeaderSig))); reason != "" {
		return schema.Reply{}, fmt.Errorf("the kick's answer is not signed by a node (%s)", reason)
	}
	var r schema.Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return schema.Reply{}, errors.New("invalid kick answer")
	}
	return r, nil
}
