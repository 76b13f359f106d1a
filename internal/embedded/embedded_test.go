package embedded

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestRepoNatsConfParses keeps the documented nats.conf valid.
func TestRepoNatsConfParses(t *testing.T) {
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	if opts.Port != 4222 || opts.Host != "127.0.0.1" || opts.StoreDir == "" {
		t.Fatalf("nats.conf: listen %s:%d, store %q", opts.Host, opts.Port, opts.StoreDir)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\njetstream { store_dir: \""+filepath.ToSlash(filepath.Join(dir, "js"))+"\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"flags": {Listen: "127.0.0.1:-1", DataDir: filepath.Join(dir, "data")},
		"conf":  {ConfFile: conf, Listen: "127.0.0.1:1", DataDir: filepath.Join(dir, "unused")},
	} {
		t.Run(name, func(t *testing.T) {
			ns, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Shutdown()
			if !ns.JetStreamEnabled() {
				t.Fatal("JetStream off")
			}
			nc, err := nats.Connect("", ns.ConnOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := Start(context.Background(), Config{Listen: "nonsense", DataDir: dir}); err == nil {
		t.Fatal("bad listen address accepted")
	}
}
