package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natsconn/authtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func devsim(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := run(ctx, args, lookup, &out, &errb)
	return code, out.String(), errb.String()
}

func devicesBucket(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: schema.BucketDevices})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestRegister: --register writes what --print-registry prints into
// hub_devices, over each kind of credentials; wrong credentials or a
// missing bucket fail with one line.
func TestRegister(t *testing.T) {
	for _, s := range authtest.All(t) {
		t.Run(s.Name, func(t *testing.T) {
			nc := s.Connect(t)
			code, stdout, stderr := devsim(t, nil, append([]string{"--register", "--devices", "6", "--prefix", "RG-"}, s.Bad...)...)
			if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "devsim: --register: connect to NATS") || !strings.Contains(stderr, s.BadError) {
				t.Fatalf("bad credentials: exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			code, _, stderr = devsim(t, nil, append([]string{"--register", "--devices", "6", "--prefix", "RG-"}, s.Flags...)...)
			if code != 1 || !strings.Contains(stderr, "bucket hub_devices does not exist") || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("no bucket: exit %d, stderr %q", code, stderr)
			}
			kv := devicesBucket(t, nc)
			code, stdout, stderr = devsim(t, nil, append([]string{"--register", "--devices", "6", "--prefix", "RG-"}, s.Flags...)...)
			if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "registered 6 devices") {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			_, printed, _ := devsim(t, nil, "--print-registry", "--devices", "6", "--prefix", "RG-")
			var got strings.Builder
			for i := range 6 {
				sn := fmt.Sprintf("RG-%04d", i+1)
				e, err := kv.Get(context.Background(), sn)
				if err != nil {
					t.Fatalf("%s: %v", sn, err)
				}
				var d schema.Device
				if err := json.Unmarshal(e.Value(), &d); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&got, "hubctl device add %s --type %s --group %s\n", sn, d.Type, d.Group)
			}
			if got.String() != printed {
				t.Fatalf("registry:\n%s\nwant what --print-registry prints:\n%s", got.String(), printed)
			}
		})
	}
}

// TestRegisterFlags: the password from HUB_NATS_PASSWORD, the master
// secret from a file, and the usage errors of the new flags.
func TestRegisterFlags(t *testing.T) {
	s := authtest.Password(t)
	devicesBucket(t, s.Connect(t))
	withPW := authtest.PasswordURL(t, s)
	pw, _, _ := strings.Cut(strings.TrimPrefix(withPW, "nats://hub:"), "@")
	env := map[string]string{"HUB_NATS_URL": s.URL, "HUB_NATS_USER": "hub", "HUB_NATS_PASSWORD": pw}
	if code, stdout, stderr := devsim(t, env, "--register", "--devices", "2"); code != 0 || strings.Contains(stdout, pw) {
		t.Fatalf("env: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, stdout, stderr := devsim(t, nil, "--register", "--devices", "2", "--nats-url", withPW); code != 0 || strings.Contains(stdout, pw) {
		t.Fatalf("url: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--master-secret-file", secret, "--master-secret", "x"}, "devsim: --master-secret and --master-secret-file both given"},
		{[]string{"--master-secret-file", missing}, "devsim: --master-secret-file " + missing + ": no such file"},
		{[]string{"--register", "--nats-creds", missing}, "devsim: --nats-creds " + missing + ": no such file"},
		{[]string{"--register", "--print-registry"}, "devsim: --register and --print-registry: give one"},
	} {
		code, stdout, stderr := devsim(t, nil, tc.args...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
}

// TestMasterSecretFile: the devices authenticate with the key derived
// from the file's secret, less its newline.
func TestMasterSecretFile(t *testing.T) {
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, append([]byte(hubtest.MasterSecret), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--url", n.WSURL(), "--devices", "2", "--master-secret-file", secret, "--log-level", "warn"},
			noEnv, io.Discard, io.Discard)
	}()
	natstest.Eventually(t, 10*time.Second, func() error {
		if c := n.Hub.SessionCount(); c != 2 {
			return fmt.Errorf("%d sessions, want 2", c)
		}
		return nil
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("devsim did not stop")
	}
}
