package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"sync"
	"time"
)

// DefaultMaxSkew is the clock skew allowed when DeviceConfig.MaxSkew is zero.
// A minute tolerates robots with poor clocks while keeping the window in
// which the nonce store must remember a nonce short.
const DefaultMaxSkew = 60 * time.Second

const (
	maxNameLen  = 64
	maxNonceLen = 128
	sigHexLen   = 2 * sha256.Size
)

// ValidSerial reports whether sn is 1 to 64 characters of A-Z a-z 0-9 _ -.
// The serial ends up in NATS subjects and KV keys, so the charset is kept to
// characters that are safe in both.
func ValidSerial(sn string) bool { return validName(sn) }

// validName is the shared charset check for serials, usernames and groups.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DeviceKey returns HMAC-SHA256(masterSecret, "device:" + sn), the raw
// 32-byte key of one device. Deriving it means the hub stores no per-device
// secrets; the factory provisions each robot with its derived key only.
func DeviceKey(masterSecret []byte, sn string) []byte {
	m := hmac.New(sha256.New, masterSecret)
	m.Write([]byte("device:" + sn))
	return m.Sum(nil)
}

// Sign returns the lower-case hex HMAC-SHA256(deviceKey, sn + "\n" + ts + "\n"
// + nonce), with ts in decimal. The newlines keep the fields unambiguous,
// since neither a valid serial nor a valid nonce can contain one.
func Sign(deviceKey []byte, sn string, ts int64, nonce string) string {
	return hex.EncodeToString(mac(deviceKey, sn, ts, nonce))
}

func mac(deviceKey []byte, sn string, ts int64, nonce string) []byte {
	m := hmac.New(sha256.New, deviceKey)
	m.Write([]byte(sn + "\n" + strconv.FormatInt(ts, 10) + "\n" + nonce))
	return m.Sum(nil)
}

// DeviceProof is the args of /auth/device: a device's signed login request.
// TS is Unix seconds; Sig is Sign's output (either hex case is accepted).
type DeviceProof struct {
	SN    string `json:"sn"`
	TS    int64  `json:"ts"`
	Nonce string `json:"nonce"`
	Sig   string `json:"sig"`
}

// NonceStore remembers nonces across all hub nodes, so a proof accepted by
// one node cannot be replayed against another. Claim returns ErrReplay
// (possibly wrapped) when the nonce was already claimed within the window;
// other errors mean the store is unavailable. The window must be at least
// twice the verifier's MaxSkew, the span in which a proof's timestamp passes.
type NonceStore interface {
	Claim(ctx context.Context, nonce string) error
}

// DeviceConfig configures a DeviceVerifier.
type DeviceConfig struct {
	MasterSecret []byte           // required, non-empty
	MaxSkew      time.Duration    // default DefaultMaxSkew when zero
	Nonces       NonceStore       // required
	Now          func() time.Time // default time.Now; tests inject a clock
}

// DeviceVerifier checks DeviceProofs. It is safe for concurrent use if its
// NonceStore is.
type DeviceVerifier struct {
	master  []byte
	maxSkew time.Duration
	nonces  NonceStore
	now     func() time.Time
	// keyers holds HMAC-SHA256 states keyed with master (*keyer), reset
	// and reused: deriving a device key then costs no new state.
	keyers sync.Pool
}

// NewDeviceVerifier validates cfg, filling defaults, and reports every
// problem at once (joined with errors.Join) so a bad config is fixed in one go.
func NewDeviceVerifier(cfg DeviceConfig) (*DeviceVerifier, error) {
	var errs []error
	if len(cfg.MasterSecret) == 0 {
		errs = append(errs, errors.New("auth: device config: master secret is required"))
	}
	if cfg.MaxSkew < 0 {
		errs = append(errs, errors.New("auth: device config: max skew must not be negative"))
	}
	if cfg.Nonces == nil {
		errs = append(errs, errors.New("auth: device config: nonce store is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	v := &DeviceVerifier{
		// Copy so a caller reusing or zeroing its slice cannot change our key.
		master:  append([]byte(nil), cfg.MasterSecret...),
		maxSkew: cfg.MaxSkew,
		nonces:  cfg.Nonces,
		now:     cfg.Now,
	}
	v.keyers.New = func() any { return &keyer{h: hmac.New(sha256.New, v.master)} }
	if v.maxSkew == 0 {
		v.maxSkew = DefaultMaxSkew
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// deviceKey sets key to DeviceKey(v.master, sn), on a pooled keyed
// state.
func (v *DeviceVerifier) deviceKey(key *[sha256.Size]byte, sn string) {
	k := v.keyers.Get().(*keyer)
	k.h.Reset()
	k.buf = append(append(k.buf[:0], deviceKeyPrefix...), sn...)
	k.h.Write(k.buf)
	copy(key[:], k.h.Sum(k.sum[:0]))
	v.keyers.Put(k)
}

// keyer is an HMAC-SHA256 state keyed with the master secret, with room
// for what it hashes and for its sum.
type keyer struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

var deviceKeyPrefix = []byte("device:")

// MaxSkew returns the allowed clock skew, so the caller can size the nonce
// store's window to match.
func (v *DeviceVerifier) MaxSkew() time.Duration { return v.maxSkew }

// Verify checks p in this order: serial (ErrBadSerial), nonce format
// (ErrBadNonce), timestamp within MaxSkew of now either way (ErrClockSkew),
// signature (ErrBadSignature), and only then claims the nonce, returning the
// store's error as is (ErrReplay or an outage). The cheap checks come first,
// and the signature is checked before the nonce is claimed so an attacker
// without the key cannot burn nonces or load the store.
func (v *DeviceVerifier) Verify(ctx context.Context, p DeviceProof) error {
	if !ValidSerial(p.SN) {
		return ErrBadSerial
	}
	if !validNonce(p.Nonce) {
		return ErrBadNonce
	}
	if !v.withinSkew(p.TS) {
		return ErrClockSkew
	}
	if len(p.Sig) != sigHexLen {
		return ErrBadSignature
	}
	var got [sha256.Size]byte
	if !decodeSum(&got, p.Sig) { // either case
		return ErrBadSignature
	}
	var key [sha256.Size]byte
	v.deviceKey(&key, p.SN)
	// A new crypto/hmac state per proof: each device has a key of its
	// own, and a keyed state cannot be keyed again.
	m := hmac.New(sha256.New, key[:])
	buf := proofBufs.Get().(*[]byte)
	b := append((*buf)[:0], p.SN...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, p.TS, 10)
	b = append(b, '\n')
	b = append(b, p.Nonce...)
	m.Write(b)
	*buf = b
	proofBufs.Put(buf)
	var want [sha256.Size]byte
	ok := hmac.Equal(got[:], m.Sum(want[:0]))
	if !ok {
		return ErrBadSignature
	}
	return v.nonces.Claim(ctx, p.Nonce)
}

// proofBufs holds the buffers proofs are joined in for their MAC (what
// Sign signs: sn, ts and nonce, one per line).
var proofBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// validNonce reports whether n is 1 to 128 bytes of printable ASCII without
// space, so it is safe as a store key and cannot smuggle a "\n" into Sign.
func validNonce(n string) bool {
	if len(n) == 0 || len(n) > maxNonceLen {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e {
			return false
		}
	}
	return true
}

// withinSkew reports whether |now - ts| <= maxSkew, exactly (sub-second
// parts of now count). Far-off timestamps are rejected in whole seconds
// first because time.Unix would overflow on extreme values.
func (v *DeviceVerifier) withinSkew(ts int64) bool {
	now := v.now()
	slack := int64(v.maxSkew/time.Second) + 1
	if d := now.Unix(); ts > d+slack || ts < d-slack {
		return false
	}
	diff := now.Sub(time.Unix(ts, 0))
	return -v.maxSkew <= diff && diff <= v.maxSkew
}
