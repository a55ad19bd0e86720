package paywall

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		key, hash, err := newKey()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, "tg_") || len(key) != keyLen || seen[key] {
			t.Fatalf("key %q: bad shape or repeated", key)
		}
		seen[key] = true
		if h, ok := hashKey(key); !ok || h != hash || h != sha256.Sum256([]byte(key)) {
			t.Fatalf("hashKey(%q) does not give the stored hash", key)
		}
	}
	good, _, _ := newKey()
	for _, bad := range []string{"", "tg_", "sk-" + good[3:], good[:len(good)-1], good + "x",
		good[:10] + "!" + good[11:], good[:10] + "=" + good[11:], "TG_" + good[3:]} {
		if _, ok := hashKey(bad); ok {
			t.Errorf("hashKey accepted %q", bad)
		}
	}
}
