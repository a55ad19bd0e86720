package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// secretPrefix starts every signing secret, so that one pasted in the wrong place is recognised.
const secretPrefix = "whsec_"

// newSecret returns a fresh signing secret: 256 random bits.
func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return secretPrefix + hex.EncodeToString(b[:])
}

// Signature is the Tollgate-Signature header of body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>". The timestamp is signed
// too, so a receiver that refuses old timestamps refuses replays.
func Signature(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}
