package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/fleethub/fleethub/client"
)

// loadTLS builds the TLS configuration of wss:// URLs from --tls-ca: the
// CA in the file is the only one trusted. Without a file the system's
// roots are.
func loadTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := client.LoadCAFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	return &tls.Config{RootCAs: pool}, nil
}

// certificateError reports whether err is a failed verification of the
// hub's certificate. No retry can cure it, so devsim stops at the first one
// (certAbort) instead of having every device retry for ever.
func certificateError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}

// certAbort is the cause a run is cancelled with when the hub's
// certificate is refused; Run returns it.
type certAbort struct{ err error }

func (e *certAbort) Error() string {
	return fmt.Sprintf("the hub's certificate was refused: %v (trust its CA with --tls-ca)", e.err)
}

func (e *certAbort) Unwrap() error { return e.err }

// abortOnCertificate ends the run when err is a certificate error, and
// reports whether it was one.
func (c Config) abortOnCertificate(err error) bool {
	if c.abort == nil || !certificateError(err) {
		return false
	}
	c.abort(&certAbort{err: err})
	return true
}

// certAbortOf returns the certificate error that ended ctx, if one did.
func certAbortOf(ctx context.Context) error {
	var ca *certAbort
	if errors.As(context.Cause(ctx), &ca) {
		return ca
	}
	return nil
}
