package dcs

import "errors"

// ErrConfig is returned by Start for a Config it cannot run with.
var ErrConfig = errors.New("dcs: bad config")
