// Package client is the Go SDK of fleethub: a WebSocket client of the hub
// (docs/protocol.md) for devices and for admins and viewers.
//
// Dial connects and authenticates, then keeps the client connected: when
// the connection ends it reconnects with capped, jittered exponential
// backoff (round-robin over the configured URLs), authenticates again and
// replays the subscriptions made with Subscribe. Close codes that mean "do
// not come back" (4001 replaced, 4002 kicked, 1008 policy, and 4003 token
// expired without a password to log in again) stop it instead; Err says
// why. The one 4002 that is not final is a device's whose registry entry
// changed: the client reconnects and gets its new type and group.
//
// A device reports and answers commands:
//
//	key := auth.DeviceKey(masterSecret, "R-001") // provisioned at the factory
//	// or, from what `hubctl device-key R-001` printed:
//	// key, err := client.DeviceKeyFromHex(printed)
//	c, err := client.Dial(ctx, client.Config{
//		URL:    "ws://hub.example:8080/ws",
//		Device: &client.DeviceAuth{SN: "R-001", Key: key, Type: "retail"},
//		OnCommand: func(ctx context.Context, cmd client.Command) client.Result {
//			if cmd.Service != "/cmd/dock" {
//				return client.Result{Code: 404, Msg: "unknown command"}
//			}
//			return client.Result{Values: map[string]any{"docked": true}}
//		},
//	})
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	err = c.ReportStatus(ctx, map[string]any{
//		"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 80},
//	})
//
// An admin watches devices and commands them:
//
//	c, err := client.Dial(ctx, client.Config{
//		URL:        "ws://hub.example:8080/ws",
//		Login:      &client.LoginAuth{Username: "admin", Password: password},
//		OnPush:     func(p client.Push) { log.Printf("%s %s", p.Service, p.Values) },
//		OnSnapshot: func(v json.RawMessage) { log.Printf("snapshot %s", v) },
//	})
//	...
//	_, err = c.Subscribe(ctx, map[string]any{"types": []string{"retail"}})
//	res, err := c.Command(ctx, "R-001", "/cmd/dock", nil, 10*time.Second)
//	var e *client.Error
//	if errors.As(err, &e) {
//		log.Printf("device answered %d %s", e.Code, e.Msg)
//	}
//
// A hub serving TLS (hub --tls-cert, --tls-key) is reached with a wss://
// URL. Its certificate is verified against the system's roots, or, for a
// private or test CA, against a pool given in TLSConfig:
//
//	pool, err := client.LoadCAFile("ca.pem")
//	if err != nil {
//		return err
//	}
//	c, err := client.Dial(ctx, client.Config{
//		URL:       "wss://hub.example:8443/ws",
//		TLSConfig: &tls.Config{RootCAs: pool},
//		Login:     &client.LoginAuth{Username: "admin", Password: password},
//	})
//
// A certificate that does not verify fails the connection attempt with
// the x509 reason (Dial returns it); the client never falls back to ws://.
package client
