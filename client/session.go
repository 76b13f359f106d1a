package client

import (
	"encoding/json"
	"slices"
	"time"
)

// Session is what the hub answered to the client's authentication.
type Session struct {
	// ID is the hub's id of the session.
	ID string
	// Role is device, admin or viewer.
	Role string
	// Node is the id of the node the client is connected to.
	Node string
	// PingInterval is how often the node pings the client.
	PingInterval time.Duration

	// SN, Type and Group describe a device (empty for admins and viewers).
	SN, Type, Group string

	// User and Groups describe an admin or viewer (empty for devices).
	User   string
	Groups []string
	// Token is the admin's or viewer's token and ExpiresAt when it
	// expires. Keep the token secret: it authenticates as the user.
	Token     string
	ExpiresAt time.Time
}

// authAnswer is the values of a successful auth answer on the wire.
type authAnswer struct {
	Session        string   `json:"session"`
	Role           string   `json:"role"`
	Node           string   `json:"node"`
	PingIntervalMS int64    `json:"ping_interval_ms"`
	Token          string   `json:"token"`
	ExpiresAt      int64    `json:"expires_at"`
	SN             string   `json:"sn"`
	Type           string   `json:"type"`
	Group          string   `json:"group"`
	User           string   `json:"user"`
	Groups         []string `json:"groups"`
}

// parseSession decodes the values of a successful auth answer.
func parseSession(raw json.RawMessage) (Session, error) {
	var a authAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return Session{}, err
	}
	s := Session{
		ID: a.Session, Role: a.Role, Node: a.Node,
		PingInterval: time.Duration(a.PingIntervalMS) * time.Millisecond,
		SN:           a.SN, Type: a.Type, Group: a.Group,
		User: a.User, Groups: a.Groups, Token: a.Token,
	}
	if a.ExpiresAt > 0 {
		s.ExpiresAt = time.UnixMilli(a.ExpiresAt)
	}
	return s, nil
}

// clone returns a copy that shares no slice with s.
func (s Session) clone() Session {
	s.Groups = slices.Clone(s.Groups)
	return s
}
