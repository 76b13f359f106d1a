package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/fleethub/fleethub/node"
)

// edgeOptions are the limits on the node's HTTP edge. For each number, 0
// turns the limit off.
type edgeOptions struct {
	readTimeout, idleTimeout  time.Duration
	maxUnauth, maxUnauthPerIP int
	allowDevOnNetwork         bool
}

// apply sets the node's edge limits. The node's own zero means "the
// default" and a negative value "none", so the flags' 0 becomes -1.
func (e edgeOptions) apply(c *node.Config) {
	off := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	c.ReadTimeout = time.Duration(off(int64(e.readTimeout)))
	c.IdleTimeout = time.Duration(off(int64(e.idleTimeout)))
	c.MaxUnauthenticated = int(off(int64(e.maxUnauth)))
	c.MaxUnauthenticatedPerIP = int(off(int64(e.maxUnauthPerIP)))
}

// checkDevListen refuses --dev on a --listen address that is not loopback
// (0.0.0.0, ::, an empty host, another IP, any host name but localhost):
// --dev's master secret and admin password are public, so such a node
// would let anyone on the network in. --allow-dev-on-network lets it
// start, with a warning.
func checkDevListen(dev bool, listen string, allow bool, log *slog.Logger) error {
	if !dev || node.IsLoopbackHost(listen) {
		return nil
	}
	if !allow {
		return fmt.Errorf("--dev on the non-loopback --listen %q would let anyone on the network log in with the public dev secrets; listen on 127.0.0.1, or set --allow-dev-on-network", listen)
	}
	log.Warn("DEVELOPMENT MODE ON A NETWORK ADDRESS (--allow-dev-on-network): anyone who reaches " + listen +
		" can log in as admin with password 'admin' and derive every device key from the public master secret")
	return nil
}
