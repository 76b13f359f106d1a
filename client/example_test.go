package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
)

func ExampleDial_device() {
	ctx := context.Background()
	masterSecret := []byte("factory secret")
	c, err := client.Dial(ctx, client.Config{
		URL:    "ws://127.0.0.1:8080/ws",
		Device: &client.DeviceAuth{SN: "R-001", Key: auth.DeviceKey(masterSecret, "R-001"), Type: "retail"},
		OnCommand: func(ctx context.Context, cmd client.Command) client.Result {
			if cmd.Service != "/cmd/dock" {
				return client.Result{Code: 404, Msg: "unknown command"}
			}
			return client.Result{Values: map[string]any{"docked": true}}
		},
	})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
	if err := c.ReportStatus(ctx, map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 80}}); err != nil {
		log.Print(err)
	}
}

func ExampleClient_Command() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Config{
		URLs:       []string{"ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8081/ws"},
		Login:      &client.LoginAuth{Username: "admin", Password: "secret"},
		OnPush:     func(p client.Push) { log.Printf("%s %s", p.Service, p.Values) },
		OnSnapshot: func(v json.RawMessage) { log.Printf("snapshot %s", v) },
	})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, map[string]any{"types": []string{"retail"}}); err != nil {
		log.Print(err)
	}
	res, err := c.Command(ctx, "R-001", "/cmd/dock", nil, 10*time.Second)
	var e *client.Error
	switch {
	case errors.As(err, &e):
		log.Printf("device answered %d %s %s", e.Code, e.Msg, res.Values)
	case err != nil:
		log.Print(err)
	default:
		log.Printf("docked: %s", res.Values)
	}
}

func ExampleDeviceKeyFromHex() {
	// What `hubctl device-key R-001 --master-secret-file secret` printed,
	// as read from a provisioning file, newline included.
	printed := "4eea48c3e2c7e02656cff2358b6ebe70a0afa8adf7d95a773c666c6e3899768f\n"
	key, err := client.DeviceKeyFromHex(printed)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(key), bytes.Equal(key, auth.DeviceKey([]byte("factory secret"), "R-001")))
	// Output: 32 true
}
