package presence

import "errors"

// ErrContended is returned by presence work that found the device's entry
// or last record changed under it several times in a row; it is tried
// again later.
var ErrContended = errors.New("presence: entry or record keeps changing")

// errNoStores is what a Tracker with no Stores answers a heal with.
var errNoStores = errors.New("presence: no store set to heal from")
