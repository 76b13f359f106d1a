package embedded

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleethub/fleethub/internal/testpki"
	"github.com/nats-io/nkeys"
)

const users = `authorization { users: [ {user: backend, password: s3cret} ] }` + "\n"

// TestCheckExposure runs the refuse-start rule over options as
// ProcessConfigFile and the flags leave them: which listener, which flag
// named, and the configurations that must pass.
func TestCheckExposure(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	srv := ca.Server(t, "nats")
	tlsVerify := func(block string) string {
		return block + ` { cert_file: "` + filepath.ToSlash(srv.CertFile) + `", key_file: "` + filepath.ToSlash(srv.KeyFile) +
			`", ca_file: "` + filepath.ToSlash(ca.File) + `", verify: true }` + "\n"
	}
	op, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opPub, err := op.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		listen string // --nats-listen
		conf   string // --nats-conf text; empty: no conf
		flag   string // the flag the refusal names; empty: starts
		says   string // a part of the refusal
	}{
		{name: "default", listen: "127.0.0.1:4222"},
		{name: "localhost", listen: "localhost:4222"},
		{name: "ipv6 loopback", listen: "[::1]:4222"},
		{name: "loopback /8", listen: "127.0.0.2:4222"},
		{name: "any ipv4", listen: "0.0.0.0:4222", flag: FlagListen, says: "on 0.0.0.0:4222: keep --nats-listen on a loopback address"},
		{name: "any ipv6", listen: "[::]:4222", flag: FlagListen, says: "[::]:4222"},
		{name: "empty host", listen: ":4222", flag: FlagListen, says: "0.0.0.0:4222"},
		{name: "public ip", listen: "192.0.2.7:4222", flag: FlagListen, says: "192.0.2.7:4222"},
		{name: "host name", listen: "nats.example:4222", flag: FlagListen, says: "nats.example:4222"},
		{name: "conf port only", listen: "127.0.0.1:4222", conf: "port: 4222\n", flag: FlagConf, says: "0.0.0.0:4222, the listen address of --nats-conf"},
		{name: "conf host only", listen: "127.0.0.1:4222", conf: "host: 0.0.0.0\n", flag: FlagConf, says: "0.0.0.0:4222"},
		{name: "conf loopback", listen: "0.0.0.0:4222", conf: "listen: 127.0.0.1:4222\n"},
		{name: "flag listen, conf users", listen: "0.0.0.0:4222", conf: users},
		{name: "users", conf: "listen: 0.0.0.0:4222\n" + users},
		{name: "single user", conf: "listen: 0.0.0.0:4222\nauthorization { user: a, password: b }\n"},
		{name: "token", conf: "listen: 0.0.0.0:4222\nauthorization { token: t0k3n }\n"},
		{name: "nkey user", conf: "listen: 0.0.0.0:4222\nauthorization { users: [ {nkey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4} ] }\n"},
		{name: "accounts with users", conf: "listen: 0.0.0.0:4222\naccounts { HUB: { jetstream: enabled, users: [ {user: b, password: p} ] } }\n"},
		{name: "accounts without users", conf: "listen: 0.0.0.0:4222\naccounts { HUB: { jetstream: enabled } }\n", flag: FlagConf, says: "no authorization or accounts with users"},
		{name: "no_auth_user", conf: "listen: 0.0.0.0:4222\naccounts { HUB: { users: [ {user: b, password: p} ] } }\nno_auth_user: b\n", flag: FlagConf, says: `no_auth_user "b"`},
		{name: "no_auth_user on loopback", conf: "listen: 127.0.0.1:4222\n" + users + "no_auth_user: backend\n"},
		{name: "operator", conf: "listen: 0.0.0.0:4222\ntrusted_keys: [ " + opPub + " ]\n"},
		{name: "client tls verify", conf: "listen: 0.0.0.0:4222\n" + tlsVerify("tls")},
		{name: "websocket open", conf: "websocket { port: 8443, no_tls: true }\n", flag: FlagConf, says: "websocket listener"},
		{name: "websocket loopback", conf: "websocket { listen: 127.0.0.1:8443, no_tls: true }\n"},
		{name: "websocket global users", conf: users + "websocket { port: 8443, no_tls: true }\n"},
		{name: "websocket own user", conf: "websocket { port: 8443, no_tls: true, authorization { user: w, password: p } }\n"},
		{name: "websocket no_auth_user", conf: users + "websocket { port: 8443, no_tls: true, no_auth_user: backend }\n", flag: FlagConf, says: "websocket listener"},
		{name: "websocket tls verify", conf: tlsVerify("websocket { port: 8443, tls: ") + "}\n"},
		{name: "mqtt open", conf: "server_name: m\nmqtt { port: 1883 }\n", flag: FlagConf, says: "mqtt listener"},
		{name: "mqtt global users", conf: "server_name: m\n" + users + "mqtt { port: 1883 }\n"},
		{name: "leafnodes open", conf: "leafnodes { port: 7422 }\n", flag: FlagConf, says: "leafnodes listener"},
		{name: "leafnodes own user", conf: "leafnodes { port: 7422, authorization { user: l, password: p } }\n"},
		{name: "leafnodes global users", conf: users + "leafnodes { port: 7422 }\n"},
		{name: "leafnodes global no_auth_user", conf: users + "no_auth_user: backend\nleafnodes { port: 7422 }\n", flag: FlagConf, says: "leafnodes listener"},
		{name: "cluster open", conf: users + "cluster { name: c, listen: 0.0.0.0:6222 }\n", flag: FlagConf, says: "cluster listener"},
		{name: "cluster port only", conf: users + "cluster { name: c, port: 6222 }\n", flag: FlagConf, says: "0.0.0.0:6222"},
		{name: "cluster loopback", conf: users + "cluster { name: c, listen: 127.0.0.1:6222 }\n"},
		{name: "cluster authorization", conf: users + "cluster { name: c, listen: 0.0.0.0:6222, authorization { user: r, password: p } }\n"},
		{name: "cluster tls verify", conf: users + tlsVerify("cluster { name: c, listen: 0.0.0.0:6222, tls: ") + "}\n"},
		{name: "gateway open", conf: users + "gateway { name: g, listen: 0.0.0.0:7222 }\n", flag: FlagConf, says: "gateway listener"},
		{name: "gateway authorization", conf: users + "gateway { name: g, listen: 0.0.0.0:7222, authorization { user: g, password: p } }\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Listen: tc.listen, DataDir: t.TempDir()}
			if tc.conf != "" {
				cfg.ConfFile = filepath.Join(t.TempDir(), "nats.conf")
				if err := os.WriteFile(cfg.ConfFile, []byte(tc.conf), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			opts, listenFlag, err := load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckExposure(opts, listenFlag)
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError naming %s", err, tc.flag)
			}
			msg := ce.Error()
			if ce.Flag != tc.flag || !strings.Contains(msg, tc.flag) || !strings.Contains(msg, tc.says) || strings.Contains(msg, "\n") {
				t.Fatalf("refusal %q (flag %s): want one line naming %s and saying %q", msg, ce.Flag, tc.flag, tc.says)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "[::1]": true, "localhost": true, "LocalHost": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "example.com": false, "localhost.example": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
