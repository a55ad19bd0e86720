package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/paywall"
)

// idempotency keeps the answers of POSTs made with an Idempotency-Key, per paywall and
// operation, in api_idempotency. The money moves themselves are idempotent in the ledger too
// (under a key derived from the same one), so two racing requests can never charge twice;
// this table makes the second one get the first one's answer, byte for byte.
type idempotency struct{ pool *pgxpool.Pool }

// record is a stored answer.
type record struct {
	requestHash string
	status      int
	body        []byte
}

// lookup returns the stored answer of a key, if there is one.
func (i *idempotency) lookup(ctx context.Context, paywallID, op, key string) (record, bool, error) {
	var rec record
	err := i.pool.QueryRow(ctx, `
		SELECT request_hash, status, response FROM api_idempotency
		WHERE paywall_id = $1 AND operation = $2 AND idempotency_key = $3`,
		paywallID, op, key).Scan(&rec.requestHash, &rec.status, &rec.body)
	if errors.Is(err, pgx.ErrNoRows) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, fmt.Errorf("api: read idempotency record: %w", err)
	}
	return rec, true, nil
}

// save stores an answer unless another request stored one first, and returns the stored one.
func (i *idempotency) save(ctx context.Context, paywallID, op, key string, rec record) (record, error) {
	_, err := i.pool.Exec(ctx, `
		INSERT INTO api_idempotency (paywall_id, operation, idempotency_key, request_hash, status, response)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (paywall_id, operation, idempotency_key) DO NOTHING`,
		paywallID, op, key, rec.requestHash, rec.status, rec.body)
	if err != nil {
		return record{}, fmt.Errorf("api: store idempotency record: %w", err)
	}
	stored, ok, err := i.lookup(ctx, paywallID, op, key)
	if err != nil {
		return record{}, err
	}
	if !ok {
		return record{}, errors.New("api: idempotency record vanished after insert")
	}
	return stored, nil
}

// maxIdempotencyKeyLen bounds a key; UUIDs and similar are far shorter.
const maxIdempotencyKeyLen = 255

// idempotencyKey reads and checks the Idempotency-Key header; on a problem it has answered 400.
func idempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		badRequest(w, "missing_idempotency_key", "Idempotency-Key",
			"This request moves money, so it needs an Idempotency-Key header (a fresh UUID per operation; reuse it only to retry).")
		return "", false
	}
	if len(key) > maxIdempotencyKeyLen {
		badRequest(w, "invalid_idempotency_key", "Idempotency-Key",
			fmt.Sprintf("The Idempotency-Key is %d characters long; at most %d are allowed.", len(key), maxIdempotencyKeyLen))
		return "", false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			badRequest(w, "invalid_idempotency_key", "Idempotency-Key",
				"The Idempotency-Key may hold only visible ASCII characters (no spaces).")
			return "", false
		}
	}
	return key, true
}

// requestHash is the identity of a request for idempotency: the SHA-256 of its parsed,
// normalised form (so "1.5" and "1.50" are the same charge).
func requestHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// idempotent runs do at most once per (paywall, op, key) with success: a successful (2xx)
// answer is stored and every later request with the same key and the same normalized request
// gets it again (with Idempotent-Replayed: true); the same key with another request is 409.
// Answers that are not 2xx are not stored: nothing happened, so a retry with the same key
// (after the user topped up, say) runs again.
func (s *Server) idempotent(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, op, key string, req any, do func(w http.ResponseWriter)) {
	hash, err := requestHash(req)
	if err != nil {
		s.unavailable(w, r, "read the request", err)
		return
	}
	rec, found, err := s.idem.lookup(r.Context(), pw.ID, op, key)
	if err != nil {
		s.unavailable(w, r, "check the Idempotency-Key", err)
		return
	}
	if found {
		replay(w, rec, hash)
		return
	}
	capture := &capturedResponse{header: http.Header{}, status: http.StatusOK}
	do(capture)
	if capture.status < 200 || capture.status > 299 {
		capture.writeTo(w)
		return
	}
	stored, err := s.idem.save(r.Context(), pw.ID, op, key, record{requestHash: hash, status: capture.status, body: capture.body.Bytes()})
	if err != nil {
		// The money moved (or was found moved) in the ledger; the answer is right even if it
		// could not be remembered, and a retry finds the same ledger transfer again.
		s.opts.Logger.ErrorContext(r.Context(), "api: could not store an idempotent answer", "op", op, "err", err)
		capture.writeTo(w)
		return
	}
	if stored.requestHash != hash || !bytes.Equal(stored.body, capture.body.Bytes()) {
		// A racing request with the same key won: its answer is the one.
		replay(w, stored, hash)
		return
	}
	capture.writeTo(w)
}

func replay(w http.ResponseWriter, rec record, hash string) {
	if rec.requestHash != hash {
		conflict(w, "idempotency_key_reused",
			"This Idempotency-Key was already used with a different request. Use a new key for a new operation; reuse a key only to retry the same request.")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Idempotent-Replayed", "true")
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body)
}

// capturedResponse holds an answer until it is known whether to store it.
type capturedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *capturedResponse) Header() http.Header         { return c.header }
func (c *capturedResponse) WriteHeader(status int)      { c.status = status }
func (c *capturedResponse) Write(b []byte) (int, error) { return c.body.Write(b) }

func (c *capturedResponse) writeTo(w http.ResponseWriter) {
	for k, v := range c.header {
		w.Header()[k] = v
	}
	w.WriteHeader(c.status)
	_, _ = w.Write(c.body.Bytes())
}
