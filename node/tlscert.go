package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLS on the WebSocket edge. The node serves the certificate a certLoader
// holds, and the loader's watcher replaces it when the files change, so a
// renewed certificate takes effect without a restart: new connections get
// it within certPollInterval (plus the time to read the files), while open
// sessions keep the connection, and the certificate, they started with.
//
// A pair is swapped in only whole: both files read after one stat of
// each, parsed and checked (the key must match the certificate) before one
// atomic store. Files written at different moments (a renewal that writes
// the certificate, then the key) fail the check in between; the old pair
// stays served until a poll finds the two files agreeing again.

const (
	// certPollInterval is how often the watcher stats the two files.
	certPollInterval = 2 * time.Second
	// certWarnEvery rate-limits the warning about an invalid new pair:
	// a half-written pair, or one left broken, must not flood the log.
	certWarnEvery = time.Minute
)

// Results of fleethub_tls_reloads_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// certLoader holds the served certificate and reloads it from its files.
type certLoader struct {
	certFile, keyFile string
	log               *slog.Logger
	reloadOK          prometheus.Counter
	reloadError       prometheus.Counter

	cert atomic.Pointer[tls.Certificate] // the pair served now

	// Owned by watch (and by newCertLoader before it starts).
	tried    [2]fileStamp // the files as they were when last read
	failed   bool         // the last read of the pair failed
	lastWarn time.Time    // when an invalid pair was last warned about
	quiet    int          // invalid pairs not warned about since then
}

// fileStamp is what the watcher compares between polls: the file's
// identity (device and inode, through os.SameFile, so a file replaced by a
// rename counts as changed even with the same size and time), its
// modification time and its size. A file that cannot be stat'ed has err.
type fileStamp struct {
	fi  os.FileInfo
	err string
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: err.Error()}
	}
	return fileStamp{fi: fi}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.fi == nil || b.fi == nil {
		return a.fi == nil && b.fi == nil && a.err == b.err
	}
	return os.SameFile(a.fi, b.fi) && a.fi.ModTime().Equal(b.fi.ModTime()) && a.fi.Size() == b.fi.Size()
}

// newCertLoader loads the pair once. An error names the flags, since a
// node that cannot serve its certificate must not start.
func newCertLoader(certFile, keyFile string, reg prometheus.Registerer, log *slog.Logger) (*certLoader, error) {
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "fleethub", Name: "tls_reloads_total",
		Help: "Reloads of the TLS certificate and key files after a change, by result (error: the new pair was invalid and the old one is still served).",
	}, []string{"result"})
	l := &certLoader{
		certFile: certFile, keyFile: keyFile, log: log,
		reloadOK: reloads.WithLabelValues(resultOK), reloadError: reloads.WithLabelValues(resultError),
	}
	cert, stamps, err := l.load()
	if err != nil {
		return nil, fmt.Errorf("node: --tls-cert %s, --tls-key %s: %w", certFile, keyFile, err)
	}
	if reg != nil {
		if err := reg.Register(reloads); err != nil {
			return nil, fmt.Errorf("node: register TLS metrics: %w", err)
		}
	}
	l.cert.Store(cert)
	l.tried = stamps
	log.Info("TLS certificate loaded", certAttrs(cert)...)
	return l, nil
}

// load reads and checks the pair. The stamps are taken before the files
// are read: a file that changes while it is read then differs from its
// stamp at the next poll, which reads it again.
func (l *certLoader) load() (*tls.Certificate, [2]fileStamp, error) {
	stamps := [2]fileStamp{stamp(l.certFile), stamp(l.keyFile)}
	// LoadX509KeyPair checks that the key matches the certificate, and
	// parses the leaf.
	cert, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		return nil, stamps, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, stamps, err
		}
	}
	return &cert, stamps, nil
}

// getCertificate is tls.Config.GetCertificate: the pair of the moment, for
// every handshake.
func (l *certLoader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return l.cert.Load(), nil
}

// watch polls the files until ctx ends.
func (l *certLoader) watch(ctx context.Context) {
	t := time.NewTicker(certPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.poll()
		}
	}
}

// poll reloads the pair when either file differs from when it was last
// read, and while the last read failed: a failure that no change of the
// files cures (a permission fixed with chmod changes neither time nor
// size) must not stick. A broken pair is counted and warned about once
// per state of the files, not at every poll.
func (l *certLoader) poll() {
	now := [2]fileStamp{stamp(l.certFile), stamp(l.keyFile)}
	changed := !now[0].same(l.tried[0]) || !now[1].same(l.tried[1])
	if !changed && !l.failed {
		return
	}
	cert, stamps, err := l.load()
	changed = !stamps[0].same(l.tried[0]) || !stamps[1].same(l.tried[1])
	l.tried = stamps
	if err != nil {
		l.failed = true
		if !changed {
			return // the same broken pair as at the last poll
		}
		l.reloadError.Inc()
		if time.Since(l.lastWarn) < certWarnEvery {
			l.quiet++
			l.log.Debug("new TLS certificate or key invalid; still serving the previous one", "err", err)
			return
		}
		l.log.Warn("new TLS certificate or key invalid; still serving the previous one (written at different moments? read again at every poll)",
			"cert", l.certFile, "key", l.keyFile, "err", err, "not_warned", l.quiet)
		l.lastWarn, l.quiet = time.Now(), 0
		return
	}
	l.failed = false
	l.cert.Store(cert)
	l.reloadOK.Inc()
	l.log.Info("TLS certificate reloaded", certAttrs(cert)...)
}

func certAttrs(c *tls.Certificate) []any {
	return []any{"subject", c.Leaf.Subject.String(), "serial", c.Leaf.SerialNumber.String(),
		"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339)}
}

// tlsConfig is the listener's configuration: TLS 1.2 at least, the
// loader's certificate, and HTTP/1.1 only. A WebSocket upgrade needs
// HTTP/1.1 (the connection is hijacked), so h2 is not offered.
func (l *certLoader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: l.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
}

// serveTLS wraps ln in TLS when the node has a certificate and starts the
// watcher; stop ends the watcher and waits for it. Without a certificate
// it returns ln as it is.
func (n *Node) serveTLS(ctx context.Context, ln net.Listener) (_ net.Listener, stop func()) {
	if n.certs == nil {
		return ln, func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.certs.watch(wctx)
	}()
	return tls.NewListener(ln, n.certs.tlsConfig()), func() {
		cancel()
		<-done
	}
}

// httpErrorLog is the http.Server's ErrorLog, into the node's logger
// rather than the standard log. A failed TLS handshake (a client that
// does not trust the certificate, a scanner, plain HTTP sent to the TLS
// port) is the client's doing and common on an open port: Debug. The
// rest (a handler's panic, for one) is Warn.
func (n *Node) httpErrorLog() *log.Logger {
	return log.New(httpLogWriter{n.log}, "", 0)
}

type httpLogWriter struct{ log *slog.Logger }

func (w httpLogWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	if bytes.Contains(p, []byte("TLS handshake error")) {
		w.log.Debug("http server", "err", msg)
	} else {
		w.log.Warn("http server", "err", msg)
	}
	return len(p), nil
}
