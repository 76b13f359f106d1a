package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"sync"
)

// memNonces is an in-memory NonceStore, standing in for the cluster store.
type memNonces struct {
	mu   sync.Mutex
	seen map[string]bool
	err  error // if set, Claim fails with it (store outage)
}

func newMemNonces() *memNonces { return &memNonces{seen: map[string]bool{}} }

func (m *memNonces) Claim(_ context.Context, nonce string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if m.seen[nonce] {
		return ErrReplay
	}
	m.seen[nonce] = true
	return nil
}

func (m *memNonces) claimed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

// hmacSHA256 is an independent reference implementation for known answers.
func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}
