package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
	"github.com/fleethub/fleethub/node"
)

// reloadBound is the contract's bound: new connections get a renewed
// certificate within 10 s.
const reloadBound = 10 * time.Second

// tlsNode is a node serving TLS from two files the test may replace.
type tlsNode struct {
	*hubtest.Node
	addr              string
	certFile, keyFile string
}

// startTLSNode starts a node serving leaf's pair, copied to files of the
// test's own.
func startTLSNode(t *testing.T, leaf *testpki.Leaf) *tlsNode {
	t.Helper()
	dir := t.TempDir()
	tn := &tlsNode{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	replaceFile(t, tn.certFile, leaf.CertPEM)
	replaceFile(t, tn.keyFile, leaf.KeyPEM)
	ns := natstest.Run(t)
	tn.Node = hubtest.StartNode(t, ns, "n1", hubtest.TLS(tn.certFile, tn.keyFile))
	tn.addr = tn.Serve(t)
	return tn
}

func (tn *tlsNode) wsURL() string { return "wss://" + tn.addr + "/ws" }

// replaceFile replaces path with b in one rename, as a renewal tool does.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func pool(cas ...*testpki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// servedSerial opens a new TLS connection and returns the serial of the
// certificate the node presents.
func servedSerial(addr string, roots *x509.CertPool) (string, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: roots}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func awaitSerial(t *testing.T, addr string, roots *x509.CertPool, want *testpki.Leaf) {
	t.Helper()
	natstest.Eventually(t, reloadBound, func() error {
		got, err := servedSerial(addr, roots)
		if err != nil {
			return err
		}
		if got != want.Cert.SerialNumber.String() {
			return fmt.Errorf("served serial %s, want %s", got, want.Cert.SerialNumber)
		}
		return nil
	})
}

// reloads reads fleethub_tls_reloads_total{result}.
func reloads(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "fleethub_tls_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("fleethub_tls_reloads_total{result=%q} is not registered", result)
	return 0
}

func awaitReloads(t *testing.T, reg *prometheus.Registry, result string, want float64) {
	t.Helper()
	natstest.Eventually(t, reloadBound, func() error {
		if got := reloads(t, reg, result); got != want {
			return fmt.Errorf("tls_reloads_total{result=%q} = %v, want %v", result, got, want)
		}
		return nil
	})
}

// TestTLSRenewalKeepsSessions: a device and an admin (Go SDK) work over
// WSS; the files are replaced by a certificate of another CA; a new
// connection gets it within 10 s, and the sessions opened before still
// work, on the same connections.
func TestTLSRenewalKeepsSessions(t *testing.T) {
	ca1, ca2 := testpki.NewCA(t), testpki.NewCA(t)
	first, second := ca1.Server(t, "hub-1"), ca2.Server(t, "hub-2")
	tn := startTLSNode(t, first)
	if got := reloads(t, tn.Registry, "ok") + reloads(t, tn.Registry, "error"); got != 0 {
		t.Fatalf("reloads before any change: %v", got)
	}
	roots := pool(ca1, ca2)
	ctx := ctxT(t)

	const sn = "TLS-1"
	dev, err := client.Dial(ctx, client.Config{
		URL:       tn.wsURL(),
		TLSConfig: &tls.Config{RootCAs: roots},
		Device:    &client.DeviceAuth{SN: sn, Key: auth.DeviceKey(hubtest.MasterSecret, sn), Type: "retail"},
		OnCommand: func(context.Context, client.Command) client.Result {
			return client.Result{Values: map[string]any{"pong": true}}
		},
	})
	if err != nil {
		t.Fatalf("device over wss: %v", err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	admin, err := client.Dial(ctx, client.Config{
		URL:       tn.wsURL(),
		TLSConfig: &tls.Config{RootCAs: roots},
		Login:     &client.LoginAuth{Username: "admin", Password: hubtest.AdminPassword},
	})
	if err != nil {
		t.Fatalf("admin over wss: %v", err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	devSession, adminSession := dev.Session().ID, admin.Session().ID
	if _, err := admin.Command(ctx, sn, "/cmd/ping", nil, 5*time.Second); err != nil {
		t.Fatalf("command before the renewal: %v", err)
	}

	renewed := time.Now()
	replaceFile(t, tn.keyFile, second.KeyPEM)
	replaceFile(t, tn.certFile, second.CertPEM)
	awaitSerial(t, tn.addr, roots, second)
	t.Logf("new certificate served %v after the files were replaced", time.Since(renewed).Round(time.Millisecond))
	awaitReloads(t, tn.Registry, "ok", 1)

	ctx = ctxT(t)
	if err := dev.ReportStatus(ctx, map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 50}}); err != nil {
		t.Fatalf("status after the renewal: %v", err)
	}
	res, err := admin.Command(ctx, sn, "/cmd/ping", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("command after the renewal: %v", err)
	}
	if string(res.Values) != `{"pong":true}` {
		t.Fatalf("command answer %s", res.Values)
	}
	if dev.Session().ID != devSession || admin.Session().ID != adminSession {
		t.Fatalf("sessions changed over the renewal: device %s -> %s, admin %s -> %s",
			devSession, dev.Session().ID, adminSession, admin.Session().ID)
	}
	// A client trusting only the new CA connects too.
	c2, err := client.Dial(ctx, client.Config{
		URL: tn.wsURL(), TLSConfig: &tls.Config{RootCAs: ca2.Pool()},
		Login: &client.LoginAuth{Username: "admin", Password: hubtest.AdminPassword},
	})
	if err != nil {
		t.Fatalf("admin trusting only the new CA: %v", err)
	}
	_ = c2.Close()
}

// TestTLSInvalidReplacementKeepsOld: a key that does not match, a
// half-written certificate, and a renewal that writes the certificate
// and the key at different moments: each invalid state is counted as an
// error, the old pair stays served, and the matching pair is served once
// both files are written.
func TestTLSInvalidReplacementKeepsOld(t *testing.T) {
	ca := testpki.NewCA(t)
	first, second, other := ca.Server(t, "hub-1"), ca.Server(t, "hub-2"), ca.Server(t, "other")
	tn := startTLSNode(t, first)
	roots := ca.Pool()
	awaitSerial(t, tn.addr, roots, first)

	// Each step changes one file, so that every state the node may poll
	// is known. A certificate cut short, as while it is being written:
	replaceFile(t, tn.certFile, first.CertPEM[:len(first.CertPEM)/2])
	awaitReloads(t, tn.Registry, "error", 1)
	awaitSerial(t, tn.addr, roots, first)

	// A key that belongs to another certificate:
	replaceFile(t, tn.keyFile, other.KeyPEM)
	awaitReloads(t, tn.Registry, "error", 2)
	awaitSerial(t, tn.addr, roots, first)

	// The renewal: the new certificate first (it does not match the key
	// on disk), then its key.
	replaceFile(t, tn.certFile, second.CertPEM)
	awaitReloads(t, tn.Registry, "error", 3)
	awaitSerial(t, tn.addr, roots, first)
	if got := reloads(t, tn.Registry, "ok"); got != 0 {
		t.Fatalf("reloads ok = %v after invalid pairs only", got)
	}
	replaceFile(t, tn.keyFile, second.KeyPEM)
	awaitSerial(t, tn.addr, roots, second)
	awaitReloads(t, tn.Registry, "ok", 1)
	if got := reloads(t, tn.Registry, "error"); got != 3 {
		t.Fatalf("reloads error = %v, want 3", got)
	}
}

// TestTLSNoPlaintext: a node with a certificate serves nothing in clear:
// ws:// and http:// to its listener fail, and so does TLS below 1.2.
func TestTLSNoPlaintext(t *testing.T) {
	ca := testpki.NewCA(t)
	tn := startTLSNode(t, ca.Server(t, "hub"))

	if c, _, err := websocket.DefaultDialer.Dial("ws://"+tn.addr+"/ws", nil); err == nil {
		_ = c.Close()
		t.Fatal("ws:// to the TLS listener was upgraded")
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	if resp, err := hc.Get("http://" + tn.addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP /healthz answered 200 on the TLS listener")
		}
	}
	d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}}
	if conn, err := d.Dial("tcp", tn.addr); err == nil {
		conn.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	// And HTTPS does answer, with HTTP/1.1 (a WebSocket needs it).
	hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	resp, err := hc.Get("https://" + tn.addr + "/livez")
	if err != nil {
		t.Fatalf("https /livez: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		t.Fatalf("https /livez: %d over %s", resp.StatusCode, resp.Proto)
	}
}

// TestTLSClientRefusesUnknownCA: the SDK does not trust a certificate
// from a CA it was not given, and says why.
func TestTLSClientRefusesUnknownCA(t *testing.T) {
	ca := testpki.NewCA(t)
	tn := startTLSNode(t, ca.Server(t, "hub"))
	_, err := client.Dial(ctxT(t), client.Config{
		URL:   tn.wsURL(),
		Login: &client.LoginAuth{Username: "admin", Password: hubtest.AdminPassword},
	})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("dial without the CA: %v, want an x509 unknown authority error", err)
	}
}

// TestTLSBadFilesRefused: New fails, naming the flags, on a missing file,
// a key that does not match, and half a pair.
func TestTLSBadFilesRefused(t *testing.T) {
	ca := testpki.NewCA(t)
	a, b := ca.Server(t, "a"), ca.Server(t, "b")
	n := hubtest.StartNode(t, natstest.Run(t), "n1")
	missing := filepath.Join(t.TempDir(), "none.pem")
	for _, c := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", missing, a.KeyFile, "--tls-cert"},
		{"missing key", a.CertFile, missing, "--tls-key"},
		{"key of another certificate", a.CertFile, b.KeyFile, "private key does not match"},
		{"cert only", a.CertFile, "", "--tls-cert and --tls-key go together"},
		{"key only", "", a.KeyFile, "--tls-cert and --tls-key go together"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := node.New(node.Config{Hub: n.Hub, TLSCertFile: c.cert, TLSKeyFile: c.key})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
}
