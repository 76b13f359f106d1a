package embedded

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// Flags CheckExposure names in its refusals.
const (
	FlagListen = "--nats-listen"
	FlagConf   = "--nats-conf"
)

// CheckExposure reports the first listener of opts that would let a
// client in without credentials on an address other than loopback, as a
// *ConfigError naming the flag to change; nil when there is none.
// listenFlag is where the client address came from: FlagListen or
// FlagConf. Every other listener (websocket, mqtt, leafnodes, cluster,
// gateway) can only come from the conf, so its refusal names FlagConf.
//
// Anything that reaches the bus owns the fleet (it can write users, forge
// presence, push to every device), so a node outside --dev never starts
// that way. A listener is closed to strangers when the server asks for
// credentials it can check: users, nkeys, a token, an operator's JWTs, or
// a client certificate verified against the conf's CA (tls verify). A
// no_auth_user (or an operator's default_sentinel) lets anyone in as that
// user, so it counts as no credentials. Loopback is 127.0.0.0/8, ::1 and
// "localhost"; an empty host is every interface, as in nats-server.
//
// It reads the options as ProcessConfigFile leaves them, before the
// node's own user is added, and changes nothing.
func CheckExposure(opts *server.Options, listenFlag string) error {
	global, why := clientAuth(opts)
	if !opts.DontListen && !global && !opts.TLSVerify && !verifiesClients(opts.TLSConfig) && !isLoopback(opts.Host) {
		port := opts.Port
		if port == 0 {
			port = server.DEFAULT_PORT
		}
		addr := hostPort(opts.Host, port)
		if listenFlag == FlagListen {
			return configErr(FlagListen, fmt.Sprintf("the embedded NATS server would accept clients without credentials (%s) on %s: "+
				"keep --nats-listen on a loopback address, or give --nats-conf an authorization or accounts block with users", why, addr))
		}
		return configErr(FlagConf, fmt.Sprintf("the embedded NATS server would accept clients without credentials (%s) on %s, the listen address of --nats-conf: "+
			"listen on a loopback address, or add an authorization or accounts block with users to --nats-conf", why, addr))
	}
	type listener struct {
		name       string
		host       string
		port       int
		authorized bool
		why        string
	}
	ws, mq, leaf := &opts.Websocket, &opts.MQTT, &opts.LeafNode
	wsAuth, wsWhy := overrideAuth(global, why, ws.Username, ws.Token, ws.NoAuthUser)
	mqAuth, mqWhy := overrideAuth(global, why, mq.Username, mq.Token, mq.NoAuthUser)
	leafAuth, leafWhy := global, why
	if leaf.Username != "" || leaf.Nkey != "" || len(leaf.Users) > 0 {
		leafAuth = true
	}
	for _, l := range []listener{
		{"websocket", ws.Host, ws.Port, wsAuth || verifiesClients(ws.TLSConfig), wsWhy},
		{"mqtt", mq.Host, mq.Port, mqAuth || verifiesClients(mq.TLSConfig), mqWhy},
		{"leafnodes", leaf.Host, leaf.Port, leafAuth || verifiesClients(leaf.TLSConfig), leafWhy},
		{"cluster", opts.Cluster.Host, opts.Cluster.Port,
			opts.Cluster.Username != "" || opts.CustomRouterAuthentication != nil || verifiesClients(opts.Cluster.TLSConfig),
			"no cluster authorization and no tls verify"},
		{"gateway", opts.Gateway.Host, opts.Gateway.Port,
			opts.Gateway.Username != "" || verifiesClients(opts.Gateway.TLSConfig),
			"no gateway authorization and no tls verify"},
	} {
		if l.port == 0 || l.authorized || isLoopback(l.host) {
			continue
		}
		return configErr(FlagConf, fmt.Sprintf("the embedded NATS server's %s listener would accept connections without credentials (%s) on %s: "+
			"bind it to a loopback address in --nats-conf, or require credentials there (users, or tls verify)", l.name, l.why, hostPort(l.host, l.port)))
	}
	return nil
}

// clientAuth reports whether plain clients must present credentials, and
// if not, why not, in the conf's words.
func clientAuth(opts *server.Options) (bool, string) {
	configured := opts.CustomClientAuthentication != nil || len(opts.TrustedKeys) > 0 || len(opts.TrustedOperators) > 0 ||
		opts.Nkeys != nil || opts.Users != nil || opts.Username != "" || opts.Authorization != ""
	switch {
	case !configured:
		return false, "no authorization or accounts with users"
	case opts.NoAuthUser != "":
		return false, fmt.Sprintf("no_auth_user %q", opts.NoAuthUser)
	case opts.DefaultSentinel != "" && (len(opts.TrustedKeys) > 0 || len(opts.TrustedOperators) > 0):
		return false, "default_sentinel"
	}
	return true, ""
}

// overrideAuth is clientAuth for a websocket or mqtt block, which may
// override the global authorization with its own user, token or
// no_auth_user (nats-server's authOverride).
func overrideAuth(global bool, why, user, token, noAuthUser string) (bool, string) {
	if user == "" && token == "" && noAuthUser == "" {
		return global, why
	}
	if noAuthUser != "" {
		return false, fmt.Sprintf("no_auth_user %q", noAuthUser)
	}
	return true, ""
}

// verifiesClients reports whether a TLS listener demands a client
// certificate signed by its CA (tls { verify: true }).
func verifiesClients(c *tls.Config) bool {
	return c != nil && c.ClientAuth == tls.RequireAndVerifyClientCert
}

// isLoopback reports whether a listen host only takes connections from
// this machine. The empty host is every interface.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func hostPort(host string, port int) string {
	if host == "" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
