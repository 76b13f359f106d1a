package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// DeviceKeySize is the length of a device key in bytes (auth.DeviceKey).
const DeviceKeySize = sha256.Size

// hexKeyHint is added to a "bad signature" refusal of a device whose key
// is hex text rather than the bytes it spells.
const hexKeyHint = "the key looks like hex: decode it with client.DeviceKeyFromHex"

// DeviceKeyFromHex decodes a device key as `hubctl device-key SN` prints
// it, 64 hex digits, into the 32 bytes DeviceAuth.Key takes. White space
// around it (the newline hubctl ends its line with) is ignored; anything
// else that is not 64 hex digits is an error that says what is wrong.
func DeviceKeyFromHex(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("client: device key: empty, want the 64 hex digits hubctl device-key prints")
	}
	key, err := hex.DecodeString(s)
	if err != nil {
		var bad hex.InvalidByteError
		if errors.As(err, &bad) {
			i := strings.IndexByte(s, byte(bad))
			return nil, fmt.Errorf("client: device key: %q at offset %d is not a hex digit, want the 64 hex digits hubctl device-key prints", s[i:i+1], i)
		}
		// hex.ErrLength: an odd number of digits.
		return nil, fmt.Errorf("client: device key: %d hex digits, want %d", len(s), 2*DeviceKeySize)
	}
	if len(key) != DeviceKeySize {
		return nil, fmt.Errorf("client: device key: %d hex digits, want %d", len(s), 2*DeviceKeySize)
	}
	return key, nil
}

// looksHex reports whether a device key is hex text (64 hex digits,
// perhaps with white space around them) rather than raw bytes: the
// mistake of passing what hubctl device-key prints as it is.
func looksHex(key []byte) bool {
	key = bytes.TrimSpace(key)
	if len(key) != 2*DeviceKeySize {
		return false
	}
	_, err := hex.DecodeString(string(key))
	return err == nil
}
