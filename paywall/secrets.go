package paywall

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// SecretsKeySize is the length of a secrets key: AES-256.
const SecretsKeySize = 32

// sealedPrefix starts every sealed credential and names its format: AES-256-GCM under the
// secrets key, "v1:" + unpadded base64url of nonce (12 bytes) || ciphertext || tag (16 bytes),
// with additional data binding it to its paywall. Another prefix would name another format
// or key, so a key rotation can tell old values from new.
const sealedPrefix = "v1:"

// maxSealedLen bounds a sealed value: the longest credential, sealed.
var maxSealedLen = len(sealedPrefix) + base64.RawURLEncoding.EncodedLen(gcmNonceSize+maxCredentialLen+gcmTagSize)

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// sealedEncoding is the one spelling of a sealed value's bytes.
var sealedEncoding = base64.RawURLEncoding.Strict()

// SecretsKey seals BYOK upstream credentials (and, through Seal, other secrets such as webhook
// signing secrets) before they reach the database or Redis, and opens them for the request
// path. It is safe for concurrent use.
type SecretsKey struct {
	aead cipher.AEAD
}

// NewSecretsKey returns a SecretsKey on SecretsKeySize random bytes.
func NewSecretsKey(key []byte) (*SecretsKey, error) {
	if len(key) != SecretsKeySize {
		return nil, fmt.Errorf("paywall: a secrets key is %d bytes, got %d", SecretsKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("paywall: secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("paywall: secrets key: %w", err)
	}
	return &SecretsKey{aead: aead}, nil
}

// ParseSecretsKey decodes a secrets key written in standard base64 (as `openssl rand -base64
// 32` prints it). An empty s means no key: (nil, nil).
func ParseSecretsKey(s string) (*SecretsKey, error) {
	if s == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("paywall: the secrets key is not base64 (make one with `openssl rand -base64 32`)")
	}
	return NewSecretsKey(key)
}

// upstreamKeyPurpose is what a sealed BYOK credential is bound to, besides its paywall.
const upstreamKeyPurpose = "paywall upstream_key"

// additionalData binds a sealed value to its purpose and its paywall: opened for another
// purpose or under another id, it fails.
func additionalData(purpose, paywallID string) []byte {
	return []byte("tollgate " + purpose + "\x00" + paywallID)
}

// seal returns credential sealed for paywallID.
func (k *SecretsKey) seal(paywallID, credential string) string {
	return k.Seal(upstreamKeyPurpose, paywallID, credential)
}

// Seal seals a secret for one paywall and one purpose (what the secret is: "paywall
// upstream_key" for BYOK credentials, "webhook signing_secret"…), with a fresh random
// nonce (96 random bits: far from GCM's limit for the few seals a key makes). The purpose and
// the paywall are the additional data: the value opens for them only, so a sealed value copied
// to another paywall or another column does not open.
func (k *SecretsKey) Seal(purpose, paywallID, secret string) string {
	var nonce [gcmNonceSize]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never returns an error (it crashes the program instead)
	return k.sealFor(nonce, purpose, paywallID, secret)
}

// sealWith seals a credential with a given nonce, for tests (which need fixed values).
func (k *SecretsKey) sealWith(nonce [gcmNonceSize]byte, paywallID, credential string) string {
	return k.sealFor(nonce, upstreamKeyPurpose, paywallID, credential)
}

func (k *SecretsKey) sealFor(nonce [gcmNonceSize]byte, purpose, paywallID, secret string) string {
	buf := make([]byte, gcmNonceSize, gcmNonceSize+len(secret)+gcmTagSize)
	copy(buf, nonce[:])
	buf = k.aead.Seal(buf, buf, []byte(secret), additionalData(purpose, paywallID))
	return sealedPrefix + sealedEncoding.EncodeToString(buf)
}

// open returns the credential that sealed holds for paywallID.
// It can return: ErrSealedCredential (not the sealed format, another key, another paywall's
// value, tampered with).
func (k *SecretsKey) open(paywallID, sealed string) (string, error) {
	plain, _, err := OpenSealed(k, nil, upstreamKeyPurpose, paywallID, sealed)
	return plain, err
}

// OpenSealed opens what Seal sealed for purpose and paywallID with the current secrets key or,
// during a rotation, one of the previous keys (nil keys are skipped), and reports whether the
// current key opened it (if not, the value should be sealed again under it).
// It can return: ErrSealedCredential.
func OpenSealed(current *SecretsKey, previous []*SecretsKey, purpose, paywallID, sealed string) (plain string, isCurrent bool, err error) {
	raw, err := parseSealed(sealed)
	if err != nil {
		return "", false, err
	}
	if plain, ok := current.openRaw(purpose, paywallID, raw); ok {
		return plain, true, nil
	}
	for _, k := range previous {
		if plain, ok := k.openRaw(purpose, paywallID, raw); ok {
			return plain, false, nil
		}
	}
	if len(previous) == 0 {
		return "", false, errDoesNotOpen
	}
	return "", false, fmt.Errorf("%w with paywall.secrets_key nor with any of the %d paywall.previous_secrets_keys (sealed with another key, copied from another paywall, or tampered with)",
		ErrSealedCredential, len(previous))
}

var errDoesNotOpen = fmt.Errorf("%w with paywall.secrets_key (sealed with another key, copied from another paywall, or tampered with)", ErrSealedCredential)

// openRaw opens a parsed sealed value (parseSealed), reporting whether this key opens it (a nil
// key opens nothing). raw is left as it was, so that the next key of a rotation can try it
// (decrypting in place would overwrite it even when the value does not open).
func (k *SecretsKey) openRaw(purpose, paywallID string, raw []byte) (string, bool) {
	if k == nil {
		return "", false
	}
	plain, err := k.aead.Open(nil, raw[:gcmNonceSize], raw[gcmNonceSize:], additionalData(purpose, paywallID))
	return string(plain), err == nil
}

// parseSealed checks a value's format and returns its bytes: nonce || ciphertext || tag.
// It can return: ErrSealedCredential.
func parseSealed(s string) ([]byte, error) {
	if !isSealed(s) {
		return nil, fmt.Errorf("%w: not a sealed value (it must start with %q)", ErrSealedCredential, sealedPrefix)
	}
	if len(s) > maxSealedLen {
		return nil, fmt.Errorf("%w: %d characters, at most %d", ErrSealedCredential, len(s), maxSealedLen)
	}
	raw, err := sealedEncoding.DecodeString(s[len(sealedPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url", ErrSealedCredential)
	}
	if len(raw) < gcmNonceSize+gcmTagSize {
		return nil, fmt.Errorf("%w: %d bytes, too short", ErrSealedCredential, len(raw))
	}
	return raw, nil
}

// isSealed reports whether a stored credential is in the sealed format (rather than the
// plaintext that versions before sealing stored).
func isSealed(s string) bool { return strings.HasPrefix(s, sealedPrefix) }

// openedCredentials remembers what sealed values opened to, so the request path pays for
// AES-GCM once per sealed value rather than once per request. A sealed value opens to one
// credential for one paywall id, for ever (it is authenticated), so an entry never goes stale;
// new seals (every update makes one) only add entries, and the map is emptied when full.
type openedCredentials struct {
	mu  sync.RWMutex
	m   map[sealedFor]string
	max int
}

// sealedFor is a sealed value with the paywall it was read for.
type sealedFor struct{ paywallID, sealed string }

func (o *openedCredentials) get(k sealedFor) (string, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	v, ok := o.m[k]
	return v, ok
}

func (o *openedCredentials) put(k sealedFor, credential string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.m) >= o.max {
		clear(o.m)
	}
	o.m[k] = credential
}

// errNoSecretsKey explains what a store without a secrets key cannot do.
func errNoSecretsKey(paywallID string) error {
	return fmt.Errorf("%w: paywall %s is BYOK; its upstream credential cannot be stored or read without it", ErrNoSecretsKey, paywallID)
}

// openCredential replaces a BYOK paywall's stored (sealed) credential by the credential.
// It can return: ErrNoSecretsKey, ErrSealedCredential.
func (s *Store) openCredential(p *Paywall) error {
	if p.Mode != ModeBYOK {
		return nil
	}
	k := sealedFor{p.ID, p.UpstreamKey}
	if c, ok := s.opened.get(k); ok {
		p.UpstreamKey = c
		return nil
	}
	if !isSealed(p.UpstreamKey) {
		return fmt.Errorf("%w: paywall %s holds a plaintext upstream credential from before sealing; `tollgate migrate` with paywall.secrets_key set seals it",
			ErrSealedCredential, p.ID)
	}
	if s.opts.SecretsKey == nil {
		return errNoSecretsKey(p.ID)
	}
	c, _, err := OpenSealed(s.opts.SecretsKey, s.opts.PreviousSecretsKeys, upstreamKeyPurpose, p.ID, p.UpstreamKey)
	if err != nil {
		return fmt.Errorf("paywall %s: upstream credential: %w", p.ID, err)
	}
	s.opened.put(k, c)
	p.UpstreamKey = c
	return nil
}

// sealCredential replaces a BYOK paywall's credential by its sealed form, for storing.
// It can return: ErrNoSecretsKey.
func (s *Store) sealCredential(p *Paywall) error {
	if p.Mode != ModeBYOK {
		return nil
	}
	if s.opts.SecretsKey == nil {
		return errNoSecretsKey(p.ID)
	}
	p.UpstreamKey = s.opts.SecretsKey.seal(p.ID, p.UpstreamKey)
	return nil
}

// SealResult is what SealCredentials wrote.
type SealResult struct {
	// Sealed counts the plaintext credentials (stored by versions before sealing) it sealed.
	Sealed int
	// Resealed counts the credentials sealed with one of Options.PreviousSecretsKeys that it
	// sealed again with Options.SecretsKey (a key rotation).
	Resealed int
}

// NoKeyOpensError lists the stored sealed values of one kind that open with neither the
// secrets key nor any previous key. A key rotation's reseal (SealCredentials for BYOK
// credentials, webhook's Outbox.ResealSecrets for signing secrets) leaves them as they are and
// returns it after sealing every other value again, so that one lost key neither stops the
// rotation halfway nor goes unnoticed. It is an ErrSealedCredential.
type NoKeyOpensError struct {
	// What the values are: "BYOK upstream credential", "webhook signing secret".
	What string
	// Paywalls are the ids of the paywalls whose value no key opens, in the order they were read.
	Paywalls []string
}

func (e *NoKeyOpensError) Error() string {
	return fmt.Sprintf("the %s of %d paywall(s) opens with neither paywall.secrets_key nor any of paywall.previous_secrets_keys "+
		"(sealed with another key, copied from another paywall, or tampered with) and was left as it is: %s",
		e.What, len(e.Paywalls), strings.Join(e.Paywalls, ", "))
}

// Unwrap makes it an ErrSealedCredential for errors.Is.
func (e *NoKeyOpensError) Unwrap() error { return ErrSealedCredential }

// SealCredentials seals the BYOK credentials that versions before sealing stored in
// plaintext and, during a key rotation, seals again with the secrets key those that only a
// previous key opens (`tollgate migrate` calls it). A credential that opens with no key is left
// as it is; the others are sealed all the same, and then every such paywall is named in one
// *NoKeyOpensError (with the counts of what was sealed). It is idempotent and safe to run
// beside serving replicas: a row changed meanwhile is left to its writer, and until it is
// re-sealed a credential opens with the previous key.
// It can return: ErrNoSecretsKey (plaintext credentials to seal and no Options.SecretsKey,
// naming the paywalls, before sealing anything), *NoKeyOpensError (an ErrSealedCredential).
func (s *Store) SealCredentials(ctx context.Context) (SealResult, error) {
	var res SealResult
	byok, err := s.byokCredentials(ctx)
	if err != nil {
		return res, fmt.Errorf("paywall: seal credentials: %w", err)
	}
	plain := slices.DeleteFunc(slices.Clone(byok), func(p Paywall) bool { return isSealed(p.UpstreamKey) })
	if len(plain) > 0 && s.opts.SecretsKey == nil {
		return res, fmt.Errorf("%w: %d BYOK paywall(s) hold a plaintext upstream credential (%s); set it and run `tollgate migrate` again to seal them",
			ErrNoSecretsKey, len(plain), paywallIDs(plain))
	}
	if s.opts.SecretsKey == nil {
		return res, nil
	}
	var noKey []string
	for _, p := range byok {
		credential, counter := p.UpstreamKey, &res.Sealed
		if isSealed(p.UpstreamKey) {
			if len(s.opts.PreviousSecretsKeys) == 0 {
				continue
			}
			c, current, err := OpenSealed(s.opts.SecretsKey, s.opts.PreviousSecretsKeys, upstreamKeyPurpose, p.ID, p.UpstreamKey)
			if err != nil {
				noKey = append(noKey, p.ID)
				continue
			}
			if current {
				continue
			}
			credential, counter = c, &res.Resealed
		}
		var hash []byte
		err := s.pool.QueryRow(ctx, `UPDATE paywalls SET upstream_key = $3 WHERE id = $1 AND upstream_key = $2 RETURNING key_hash`,
			p.ID, p.UpstreamKey, s.opts.SecretsKey.seal(p.ID, credential)).Scan(&hash)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // updated meanwhile, and so sealed with the secrets key
		}
		if err != nil {
			return res, fmt.Errorf("paywall: seal credentials: %w", err)
		}
		*counter++
		// Copies cached by other replicas hold the old value (plaintext, from an older version).
		s.byKey.Invalidate(ctx, [sha256.Size]byte(hash))
	}
	if len(noKey) > 0 {
		return res, fmt.Errorf("paywall: seal credentials: %w", &NoKeyOpensError{What: "BYOK upstream credential", Paywalls: noKey})
	}
	return res, nil
}

// CheckCredentials opens every stored BYOK credential and reports those that do not open, all
// at once — for `tollgate serve` at start, so that a missing or wrong paywall.secrets_key
// stops it with one clear message rather than failing each BYOK request. It returns nil when
// every one opens (and when there are none: built-in paywalls need no key).
// It can return: ErrNoSecretsKey (naming the BYOK paywalls), ErrSealedCredential (one line
// per paywall whose credential does not open).
func (s *Store) CheckCredentials(ctx context.Context) error {
	byok, err := s.byokCredentials(ctx)
	if err != nil {
		return fmt.Errorf("paywall: check credentials: %w", err)
	}
	if len(byok) > 0 && s.opts.SecretsKey == nil {
		return fmt.Errorf("%w: %d BYOK paywall(s) need it to open their upstream credentials (%s); set it to the key they were sealed with",
			ErrNoSecretsKey, len(byok), paywallIDs(byok))
	}
	var probs []error
	for _, p := range byok {
		if err := s.openCredential(&p); err != nil {
			probs = append(probs, err)
		}
	}
	return errors.Join(probs...)
}

// byokCredentials returns the id and stored (unopened) credential of every BYOK paywall,
// oldest first.
func (s *Store) byokCredentials(ctx context.Context) ([]Paywall, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT, upstream_key FROM paywalls WHERE mode = 'byok' ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Paywall, error) {
		p := Paywall{Mode: ModeBYOK}
		return p, r.Scan(&p.ID, &p.UpstreamKey)
	})
}

// paywallIDs lists the ids of ps, for a message.
func paywallIDs(ps []Paywall) string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	return strings.Join(ids, ", ")
}
