package schema

import "errors"

// ErrReservedService is PushBody.Check's answer to a push naming one of
// the hub's own push services.
var ErrReservedService = errors.New("service: /push/presence, /push/status, /push/event and /push/summary are the hub's own")

// ErrBadLayout is Layout.Validate's answer to a data centre name that is
// not a subject token.
var ErrBadLayout = errors.New("schema: bad layout")
