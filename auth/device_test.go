package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

var testMaster = []byte("fleethub-test-master-secret")

func TestDeviceKeyAndSignKnownAnswer(t *testing.T) {
	const (
		sn    = "robot-7"
		ts    = int64(1700000000)
		nonce = "n0nce-1"
		// Frozen wire format, computed outside Go (Python hmac).
		wantKeyHex = "90ced879c6de3547a900c3339740c62a4a865333e93dfb896eecf8958a811541"
		wantSig    = "3a0977fc0c0ea1725806e6d4532f66f79e67351b93fa3c4b08791d4d16597eae"
	)
	refKey := hmacSHA256(testMaster, "device:"+sn)
	refSig := hex.EncodeToString(hmacSHA256(refKey, sn+"\n1700000000\n"+nonce))

	key := DeviceKey(testMaster, sn)
	if got := hex.EncodeToString(key); got != wantKeyHex || got != hex.EncodeToString(refKey) {
		t.Fatalf("DeviceKey = %s, want %s", got, wantKeyHex)
	}
	if got := Sign(key, sn, ts, nonce); got != wantSig || got != refSig {
		t.Fatalf("Sign = %s, want %s", got, wantSig)
	}
	if got := Sign(key, sn, -5, nonce); got != hex.EncodeToString(hmacSHA256(key, sn+"\n-5\n"+nonce)) {
		t.Fatalf("Sign with negative ts = %s", got)
	}
}

func TestValidSerial(t *testing.T) {
	tests := []struct {
		name string
		sn   string
		want bool
	}{
		{"simple", "robot-7", true},
		{"all classes", "AZaz09_-", true},
		{"one char", "x", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"65 chars", strings.Repeat("a", 65), false},
		{"empty", "", false},
		{"dot", "robot.7", false},
		{"star", "robot*", false},
		{"gt", "robot>", false},
		{"space", "robot 7", false},
		{"newline", "robot\n", false},
		{"slash", "a/b", false},
		{"unicode", "röbot", false},
		{"unicode lookalike", "robot\u20127", false},
		{"nul", "a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidSerial(tt.sn); got != tt.want {
				t.Errorf("ValidSerial(%q) = %v, want %v", tt.sn, got, tt.want)
			}
		})
	}
}

// testNow is a whole-second instant so skew boundaries are exact.
var testNow = time.Unix(1700000000, 0)

func newTestVerifier(t testing.TB, store NonceStore, now time.Time) *DeviceVerifier {
	t.Helper()
	v, err := NewDeviceVerifier(DeviceConfig{
		MasterSecret: testMaster,
		Nonces:       store,
		Now:          func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// proof returns a correctly signed proof, edited by mod before signing.
func proof(mod func(*DeviceProof)) DeviceProof {
	p := DeviceProof{SN: "robot-7", TS: testNow.Unix(), Nonce: "n0nce-1"}
	if mod != nil {
		mod(&p)
	}
	p.Sig = Sign(DeviceKey(testMaster, p.SN), p.SN, p.TS, p.Nonce)
	return p
}

func TestDeviceVerify(t *testing.T) {
	good := proof(nil)
	tests := []struct {
		name string
		p    DeviceProof
		want error
	}{
		{"ok", good, nil},
		{"skew past boundary", proof(func(p *DeviceProof) { p.TS -= 60 }), nil},
		{"skew future boundary", proof(func(p *DeviceProof) { p.TS += 60 }), nil},
		{"skew past", proof(func(p *DeviceProof) { p.TS -= 61 }), ErrClockSkew},
		{"skew future", proof(func(p *DeviceProof) { p.TS += 61 }), ErrClockSkew},
		{"ts zero", proof(func(p *DeviceProof) { p.TS = 0 }), ErrClockSkew},
		{"ts min int", proof(func(p *DeviceProof) { p.TS = math.MinInt64 }), ErrClockSkew},
		{"ts max int", proof(func(p *DeviceProof) { p.TS = math.MaxInt64 }), ErrClockSkew},
		{"ts in ms", proof(func(p *DeviceProof) { p.TS *= 1000 }), ErrClockSkew},
		{"serial empty", proof(func(p *DeviceProof) { p.SN = "" }), ErrBadSerial},
		{"serial dot", proof(func(p *DeviceProof) { p.SN = "a.b" }), ErrBadSerial},
		{"serial 65", proof(func(p *DeviceProof) { p.SN = strings.Repeat("a", 65) }), ErrBadSerial},
		{"serial 64", proof(func(p *DeviceProof) { p.SN = strings.Repeat("a", 64) }), nil},
		{"nonce empty", proof(func(p *DeviceProof) { p.Nonce = "" }), ErrBadNonce},
		{"nonce 128", proof(func(p *DeviceProof) { p.Nonce = strings.Repeat("n", 128) }), nil},
		{"nonce 129", proof(func(p *DeviceProof) { p.Nonce = strings.Repeat("n", 129) }), ErrBadNonce},
		{"nonce all printable", proof(func(p *DeviceProof) { p.Nonce = "!~\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}" }), nil},
		{"nonce space", proof(func(p *DeviceProof) { p.Nonce = "a b" }), ErrBadNonce},
		{"nonce newline", proof(func(p *DeviceProof) { p.Nonce = "a\nb" }), ErrBadNonce},
		{"nonce DEL", proof(func(p *DeviceProof) { p.Nonce = "a\x7f" }), ErrBadNonce},
		{"nonce unicode", proof(func(p *DeviceProof) { p.Nonce = "nönce" }), ErrBadNonce},
		{"bad serial wins over bad nonce", DeviceProof{SN: "a.b", TS: 0, Nonce: ""}, ErrBadSerial},
		{"bad nonce wins over skew", DeviceProof{SN: "a", TS: 0, Nonce: ""}, ErrBadNonce},
		{"skew wins over signature", DeviceProof{SN: "a", TS: 0, Nonce: "n", Sig: "x"}, ErrClockSkew},
		{"sig upper case", withSig(good, strings.ToUpper(good.Sig)), nil},
		{"sig mixed case", withSig(good, strings.ToUpper(good.Sig[:10])+good.Sig[10:]), nil},
		{"sig empty", withSig(good, ""), ErrBadSignature},
		{"sig 63 hex", withSig(good, good.Sig[:63]), ErrBadSignature},
		{"sig 65 hex", withSig(good, good.Sig+"0"), ErrBadSignature},
		{"sig not hex", withSig(good, "zz"+good.Sig[2:]), ErrBadSignature},
		{"sig with space", withSig(good, " "+good.Sig[1:]), ErrBadSignature},
		{"sig flipped", withSig(good, flipHex(good.Sig)), ErrBadSignature},
		{"sig raw base64", withSig(good, strings.Repeat("A", 43)+"="), ErrBadSignature},
		{"other serial", withSN(good, "robot-8"), ErrBadSignature},
		{"other ts", withTS(good, good.TS+1), ErrBadSignature},
		{"other nonce", withNonce(good, "n0nce-2"), ErrBadSignature},
		{"other master", DeviceProof{SN: good.SN, TS: good.TS, Nonce: good.Nonce,
			Sig: Sign(DeviceKey([]byte("other"), good.SN), good.SN, good.TS, good.Nonce)}, ErrBadSignature},
		{"master used as device key", DeviceProof{SN: good.SN, TS: good.TS, Nonce: good.Nonce,
			Sig: Sign(testMaster, good.SN, good.TS, good.Nonce)}, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newMemNonces()
			v := newTestVerifier(t, store, testNow)
			err := v.Verify(context.Background(), tt.p)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			// The nonce is claimed only once everything else passed.
			want := 0
			if err == nil {
				want = 1
			}
			if store.claimed() != want {
				t.Fatalf("claimed %d nonces, want %d", store.claimed(), want)
			}
		})
	}
}

func withSig(p DeviceProof, s string) DeviceProof   { p.Sig = s; return p }
func withSN(p DeviceProof, s string) DeviceProof    { p.SN = s; return p }
func withTS(p DeviceProof, ts int64) DeviceProof    { p.TS = ts; return p }
func withNonce(p DeviceProof, n string) DeviceProof { p.Nonce = n; return p }
func flipHex(s string) string {
	b := []byte(s)
	if b[0] == '0' {
		b[0] = '1'
	} else {
		b[0] = '0'
	}
	return string(b)
}

func TestDeviceVerifySubSecondSkew(t *testing.T) {
	// 60.5s apart counts as outside a 60s window even though the whole
	// seconds differ by exactly 60.
	tests := []struct {
		name string
		now  time.Time
		ts   int64
		want error
	}{
		{"past 60.5s", testNow.Add(500 * time.Millisecond), testNow.Unix() - 60, ErrClockSkew},
		{"future 59.5s", testNow.Add(500 * time.Millisecond), testNow.Unix() + 60, nil},
		{"future 60.5s", testNow.Add(-500 * time.Millisecond), testNow.Unix() + 60, ErrClockSkew},
		{"past 59.5s", testNow.Add(-500 * time.Millisecond), testNow.Unix() - 60, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, newMemNonces(), tt.now)
			p := proof(func(p *DeviceProof) { p.TS = tt.ts })
			if err := v.Verify(context.Background(), p); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeviceVerifyReplay(t *testing.T) {
	store := newMemNonces()
	v := newTestVerifier(t, store, testNow)
	p := proof(nil)
	if err := v.Verify(context.Background(), p); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	if err := v.Verify(context.Background(), p); !errors.Is(err, ErrReplay) {
		t.Fatalf("second Verify = %v, want ErrReplay", err)
	}
	// Another device reusing the nonce is also refused: nonces are global.
	other := proof(func(p *DeviceProof) { p.SN = "robot-8" })
	if err := v.Verify(context.Background(), other); !errors.Is(err, ErrReplay) {
		t.Fatalf("other device Verify = %v, want ErrReplay", err)
	}
}

// failingStore returns a fixed error, wrapped or not.
type failingStore struct{ err error }

func (f failingStore) Claim(context.Context, string) error { return f.err }

func TestDeviceVerifyStoreErrors(t *testing.T) {
	outage := errors.New("kv: no responders")
	wrappedReplay := fmt.Errorf("nonce store: %w", ErrReplay)
	tests := []struct {
		name string
		err  error
	}{
		{"outage", outage},
		{"wrapped replay", wrappedReplay},
		{"context", context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, failingStore{tt.err}, testNow)
			if err := v.Verify(context.Background(), proof(nil)); err != tt.err {
				t.Fatalf("Verify = %v, want store error %v as is", err, tt.err)
			}
		})
	}
}

func TestNewDeviceVerifier(t *testing.T) {
	store := newMemNonces()
	tests := []struct {
		name     string
		cfg      DeviceConfig
		wantErrs []string
		wantSkew time.Duration
	}{
		{"defaults", DeviceConfig{MasterSecret: testMaster, Nonces: store}, nil, 60 * time.Second},
		{"custom skew", DeviceConfig{MasterSecret: testMaster, Nonces: store, MaxSkew: 5 * time.Second}, nil, 5 * time.Second},
		{"no secret", DeviceConfig{Nonces: store}, []string{"master secret"}, 0},
		{"empty secret", DeviceConfig{MasterSecret: []byte{}, Nonces: store}, []string{"master secret"}, 0},
		{"no store", DeviceConfig{MasterSecret: testMaster}, []string{"nonce store"}, 0},
		{"negative skew", DeviceConfig{MasterSecret: testMaster, Nonces: store, MaxSkew: -1}, []string{"max skew"}, 0},
		{"everything wrong", DeviceConfig{MaxSkew: -time.Second}, []string{"master secret", "nonce store", "max skew"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewDeviceVerifier(tt.cfg)
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if v.MaxSkew() != tt.wantSkew {
					t.Fatalf("MaxSkew = %v, want %v", v.MaxSkew(), tt.wantSkew)
				}
				return
			}
			if err == nil || v != nil {
				t.Fatalf("NewDeviceVerifier = %v, %v; want error", v, err)
			}
			for _, w := range tt.wantErrs {
				if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "auth: ") {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDeviceVerifierCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), testMaster...)
	v, err := NewDeviceVerifier(DeviceConfig{MasterSecret: secret, Nonces: newMemNonces(),
		Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	clear(secret)
	if err := v.Verify(context.Background(), proof(nil)); err != nil {
		t.Fatalf("Verify after caller zeroed its secret: %v", err)
	}
}

// The verifier derives device keys on reused HMAC states: each one must
// still be DeviceKey's, whatever key the state derived before.
func TestVerifierDeviceKeyReusesState(t *testing.T) {
	v := newTestVerifier(t, newMemNonces(), testNow)
	for i := range 50 {
		sn := fmt.Sprintf("robot-%d", i%7)
		var got [sha256.Size]byte
		v.deviceKey(&got, sn)
		if want := DeviceKey(testMaster, sn); hex.EncodeToString(got[:]) != hex.EncodeToString(want) {
			t.Fatalf("device key of %s: got %x, want %x", sn, got, want)
		}
	}
}

// TestVerifyAllocs: checking a proof costs crypto/hmac's state and
// nothing else (the device key is derived on a pooled state, the proof
// joined in a pooled buffer).
func TestVerifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	v := newTestVerifier(t, nopNonces{}, testNow)
	p := proof(nil)
	if n := testing.AllocsPerRun(100, func() {
		if err := v.Verify(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}); n > maxVerifyAllocs {
		t.Fatalf("%v allocations a proof, want at most %d", n, maxVerifyAllocs)
	}
}

// maxVerifyAllocs is what hmac.New(sha256.New, key) allocates.
const maxVerifyAllocs = 7

// nopNonces claims every nonce, again and again.
type nopNonces struct{}

func (nopNonces) Claim(context.Context, string) error { return nil }
