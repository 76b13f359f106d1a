package client

import (
	"crypto/x509"
	"fmt"
	"os"
)

// LoadCAFile reads a file of PEM certificates into a pool, for
// Config.TLSConfig's RootCAs (or a Dialer's TLSClientConfig): the hub's
// certificate is then verified against these CAs only, not the system's
// roots. It fails when the file holds no PEM certificate.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client: CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}
