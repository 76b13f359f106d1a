package auth

import (
	"context"
	"math"
	"strings"
	"testing"
)

// FuzzDeviceVerify: a device proof (the args of /auth/device) passes only
// when it is signed with the device's key, within the skew, and only then
// is its nonce claimed.
func FuzzDeviceVerify(f *testing.F) {
	good := proof(nil)
	f.Add(good.SN, good.TS, good.Nonce, good.Sig)
	f.Add(good.SN, good.TS, good.Nonce, strings.ToUpper(good.Sig))
	f.Add("", int64(0), "", "")
	f.Add("a.b", int64(math.MinInt64), "\n", "zz")
	f.Add(strings.Repeat("a", 65), int64(math.MaxInt64), strings.Repeat("n", 129), good.Sig+"00")
	f.Fuzz(func(t *testing.T, sn string, ts int64, nonce, sig string) {
		store := newMemNonces()
		v := newTestVerifier(t, store, testNow)
		p := DeviceProof{SN: sn, TS: ts, Nonce: nonce, Sig: sig}
		err := v.Verify(context.Background(), p)
		if err != nil {
			for _, known := range []error{ErrBadSerial, ErrBadNonce, ErrClockSkew, ErrBadSignature} {
				if err == known {
					if store.claimed() != 0 {
						t.Fatalf("nonce claimed despite %v", err)
					}
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		want := Sign(DeviceKey(testMaster, sn), sn, ts, nonce)
		if !strings.EqualFold(sig, want) || !ValidSerial(sn) || !validNonce(nonce) ||
			ts < testNow.Unix()-60 || ts > testNow.Unix()+60 || store.claimed() != 1 {
			t.Fatalf("accepted bad proof %+v", p)
		}
	})
}
