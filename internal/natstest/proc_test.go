package natstest

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestStartProc(t *testing.T) {
	port := FreePort(t)
	p := StartProc(t, port, fmt.Sprintf("listen: 127.0.0.1:%d\nauthorization { user: a, password: $PW }\njetstream { store_dir: %q }\n", port, t.TempDir()), "PW=secret")
	if _, err := nats.Connect(p.URL()); err == nil {
		t.Fatal("connected without credentials")
	}
	nc, err := nats.Connect(p.URL(), nats.UserInfo("a", "secret"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}
