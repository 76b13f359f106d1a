// Package auth authenticates the two kinds of fleethub clients.
//
// Robots prove they know a per-device key derived from the hub's master
// secret by signing their serial number, a timestamp and a one-time nonce
// (see [DeviceVerifier]). Deriving the key means the hub stores no per-device
// secrets, and the timestamp plus a cluster-wide [NonceStore] stop replays.
//
// People (admins and viewers) log in with a bcrypt password (see
// [HashPassword], [CheckPassword], [User]) and then use a short-lived HS256
// JWT (see [Tokens]). The token key is also derived from the master secret
// ([TokenKey]) so any hub node can verify a token issued by another.
//
// The package is a leaf: it knows nothing about NATS or HTTP, which keeps it
// easy to test and fuzz.
//
// A device signs its login like this:
//
//	key := auth.DeviceKey(master, "robot-7")
//	ts := time.Now().Unix()
//	nonce := "4f1c2a9e0b7d" // random, never reused
//	proof := auth.DeviceProof{SN: "robot-7", TS: ts, Nonce: nonce,
//		Sig: auth.Sign(key, "robot-7", ts, nonce)}
//
// and the hub checks it:
//
//	v, err := auth.NewDeviceVerifier(auth.DeviceConfig{MasterSecret: master, Nonces: store})
//	if err != nil { ... }
//	if err := v.Verify(ctx, proof); err != nil { ... }
package auth
