package paywall

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// KeyPrefix starts every paywall API key, so a leaked key is recognisable (and scannable).
const KeyPrefix = "tg_"

// keyBytes of randomness make a key: 256 bits, beyond guessing.
const keyBytes = 32

// keyLen is the length of a key: the prefix and the unpadded base64url of keyBytes.
var keyLen = len(KeyPrefix) + base64.RawURLEncoding.EncodedLen(keyBytes)

// newKey returns a fresh API key and its hash.
func newKey() (string, [sha256.Size]byte, error) {
	var b [keyBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [sha256.Size]byte{}, fmt.Errorf("paywall: random key: %w", err)
	}
	key := KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, sha256.Sum256([]byte(key)), nil
}

// hashKey returns the stored form of a presented key, or false when it cannot be a key at
// all (so a malformed one costs neither a database nor a cache lookup).
func hashKey(key string) ([sha256.Size]byte, bool) {
	if len(key) != keyLen || key[:len(KeyPrefix)] != KeyPrefix {
		return [sha256.Size]byte{}, false
	}
	for i := len(KeyPrefix); i < len(key); i++ {
		c := key[i]
		if !base64URLChar(c) {
			return [sha256.Size]byte{}, false
		}
	}
	// Hash from a stack copy: converting a 46-byte string to []byte would allocate.
	var buf [64]byte
	n := copy(buf[:], key)
	return sha256.Sum256(buf[:n]), true
}

// base64URLChar reports whether c belongs to the unpadded base64url alphabet.
func base64URLChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
