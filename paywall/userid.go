package paywall

import "fmt"

// MaxUserIDLen is the longest user id accepted.
const MaxUserIDLen = 128

// ValidUserID checks an end user's id: 1 to 128 characters from A–Z a–z 0–9 . _ ~ : @ -
// (URL-safe, so it can also travel in a path: /v1/{user}/chat/completions).
// It can return: ErrBadUserID, wrapped with what is wrong and how to fix it.
func ValidUserID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: the user id is empty; send a stable pseudonymous id such as \"acme:user_123\"", ErrBadUserID)
	}
	if len(id) > MaxUserIDLen {
		return fmt.Errorf("%w: the user id is %d characters long; at most %d are allowed", ErrBadUserID, len(id), MaxUserIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !userIDChar(id[i]) {
			return fmt.Errorf("%w: the user id has %q at position %d; only letters, digits and . _ ~ : @ - are allowed",
				ErrBadUserID, rune(id[i]), i+1)
		}
	}
	return nil
}

func userIDChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '~', ':', '@', '-':
		return true
	}
	return false
}
