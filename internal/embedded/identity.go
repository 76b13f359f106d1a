package embedded

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// FlagAccount, FlagCreds name the flags the identity refusals point to.
const (
	FlagAccount = "--nats-account"
	FlagCreds   = "--nats-creds"
)

// GlobalAccount names nats-server's default account, for Config.Account
// when a conf with accounts should still keep the hub in the global one.
const GlobalAccount = server.DEFAULT_GLOBAL_ACCOUNT

// identity decides how the node's in-process connection authenticates and
// changes opts so that the server knows it. It returns the connection's
// auth options and the account the node lands in ("" when the given
// credentials decide).
//
//   - credentials given (cfg.Credentials): used as they are;
//   - operator (JWT) mode: the server's users are JWTs the node cannot
//     mint, so credentials are required;
//   - no authorization at all: nothing changes, the node is in the global
//     account like every client;
//   - users, nkeys or a single user: the node adds an nkey user of its own
//     (a key pair made now, kept in memory only) with no permission limits,
//     in the hub's account: cfg.Account, else the only account besides
//     the system account with JetStream, else the global account when the
//     conf has no accounts.
//
// A token cannot be mixed with users in nats-server, so a token-only conf
// is refused rather than turned into something else.
func identity(opts *server.Options, cfg Config) ([]nats.Option, string, error) {
	operator := len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0
	if len(cfg.Credentials) > 0 {
		if cfg.Account != "" {
			return nil, "", configErr(FlagAccount, "--nats-account does not apply when the node's connection has its own credentials: their user decides the account; drop --nats-account")
		}
		return cfg.Credentials, "", nil
	}
	if operator {
		if cfg.Account != "" {
			return nil, "", configErr(FlagCreds, "--nats-conf trusts an operator, so the node cannot add its own user and --nats-account cannot pick the account: "+
				"give the node's connection a user of the hub's account with --nats-creds")
		}
		return nil, "", configErr(FlagCreds, "--nats-conf trusts an operator, so the node cannot add its own user: "+
			"give the node's in-process connection a user of the hub's account with --nats-creds")
	}
	if opts.CustomClientAuthentication == nil && opts.Nkeys == nil && opts.Users == nil && opts.Username == "" && opts.Authorization == "" {
		if cfg.Account != "" && cfg.Account != GlobalAccount {
			return nil, "", configErr(FlagAccount, fmt.Sprintf("--nats-account %s: --nats-conf has no users, so every client is in the global account: "+
				"add users to an authorization or accounts block, or drop --nats-account", cfg.Account))
		}
		return nil, GlobalAccount, nil
	}
	if opts.Authorization != "" {
		return nil, "", configErr(FlagConf, "--nats-conf authorizes clients with a token, which nats-server cannot combine with the node's own user: "+
			"give its authorization block users (user and password, or nkey) instead of a token")
	}
	acc, err := hubAccount(opts, cfg)
	if err != nil {
		return nil, "", err
	}
	if opts.Username != "" {
		// A single user and a users list cannot coexist: the single user
		// becomes the list's first entry, with the same rights (all).
		opts.Users = append(opts.Users, &server.User{Username: opts.Username, Password: opts.Password, ProxyRequired: opts.ProxyRequired})
		opts.Username, opts.Password = "", ""
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", fmt.Errorf("embedded: node identity: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, "", fmt.Errorf("embedded: node identity: %w", err)
	}
	// No Permissions: the node needs every subject of its account. The
	// seed never leaves this process; a new one is made at each start.
	opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub, Account: acc})
	if opts.AuthCallout != nil {
		// The node is one of the conf's own users, not one for the
		// callout service to decide.
		opts.AuthCallout.AuthUsers = append(opts.AuthCallout.AuthUsers, pub)
	}
	name := GlobalAccount
	if acc != nil {
		name = acc.Name
	}
	return []nats.Option{nats.Nkey(pub, kp.Sign)}, name, nil
}

// hubAccount is the account the node's user joins; nil is the global one.
func hubAccount(opts *server.Options, cfg Config) (*server.Account, error) {
	var names []string
	byName := map[string]*server.Account{}
	for _, a := range opts.Accounts {
		if a.Name == systemAccount(opts) {
			continue
		}
		names = append(names, a.Name)
		byName[a.Name] = a
	}
	slices.Sort(names)
	switch {
	case cfg.Account == GlobalAccount:
		return nil, nil
	case cfg.Account != "":
		a, ok := byName[cfg.Account]
		if !ok {
			return nil, configErr(FlagAccount, fmt.Sprintf("--nats-account %s: --nats-conf defines no such account (it has: %s)", cfg.Account, listOrNone(names)))
		}
		return a, nil
	case len(names) == 0:
		return nil, nil
	}
	withJS, err := jetStreamAccounts(cfg.ConfFile)
	if err != nil {
		return nil, err
	}
	var candidates []string
	for _, n := range names {
		if withJS[n] {
			candidates = append(candidates, n)
		}
	}
	switch len(candidates) {
	case 1:
		return byName[candidates[0]], nil
	case 0:
		return nil, configErr(FlagAccount, fmt.Sprintf("--nats-conf defines accounts (%s) and none has JetStream: "+
			"enable it in the hub's account (jetstream: enabled) or name the account with --nats-account", strings.Join(names, ", ")))
	}
	return nil, configErr(FlagAccount, fmt.Sprintf("--nats-conf defines several accounts with JetStream (%s): name the hub's with --nats-account", strings.Join(candidates, ", ")))
}

func systemAccount(opts *server.Options) string {
	if opts.SystemAccount != "" {
		return opts.SystemAccount
	}
	return server.DEFAULT_SYSTEM_ACCOUNT
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// jetStreamAccounts reads which accounts of a conf file enable JetStream.
// nats-server keeps that unexported until the server runs, and the
// node's user must be placed before, so the file is read as nats-server
// reads an account's jetstream field: true, "enabled", or a block of
// limits.
func jetStreamAccounts(file string) (map[string]bool, error) {
	m, err := conf.ParseFile(file)
	if err != nil {
		return nil, configErr(FlagConf, fmt.Sprintf("--nats-conf %s: %s", file, oneLine(err.Error())))
	}
	out := map[string]bool{}
	for k, v := range m {
		if !strings.EqualFold(k, "accounts") {
			continue
		}
		accs, _ := v.(map[string]any)
		for name, av := range accs {
			fields, _ := av.(map[string]any)
			for fk, fv := range fields {
				if !strings.EqualFold(fk, "jetstream") {
					continue
				}
				switch js := fv.(type) {
				case bool:
					out[name] = js
				case string:
					out[name] = strings.EqualFold(js, "enabled") || strings.EqualFold(js, "enable")
				case map[string]any:
					out[name] = true
				}
			}
		}
	}
	return out, nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
