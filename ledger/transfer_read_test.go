package ledger_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// TestGetTransfer reads back a charge and a capture as they were written: kind, key, entries
// (one per account, shards merged) and metadata; unknown and malformed ids are
// ErrTransferNotFound.
func TestGetTransfer(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 10_000)
	ch, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch", Wallet: w, Paywall: "pw",
		Split: ledger.Split{FeeMicro: 10, DeveloperMicro: 990}, Metadata: map[string]string{"paywall": "pw", "user": "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	h := f.hold("h", w, "pw", 3000, time.Minute)
	capture, err := f.l.Capture(ctx, ledger.CaptureRequest{Key: "c", HoldID: h.ID,
		Split: ledger.Split{ProviderMicro: 1000, Provider: "openrouter", FeeMicro: 200, DeveloperMicro: 800}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      string
		want    ledger.Transfer
		entries map[ledger.Account]int64
	}{
		{"charge", ch.ID, ch, map[ledger.Account]int64{ledger.Wallet(w): -1000, ledger.PlatformFees(): 10, ledger.Earnings("pw"): 990}},
		{"upper-case id", strings.ToUpper(ch.ID), ch, map[ledger.Account]int64{ledger.Wallet(w): -1000, ledger.PlatformFees(): 10, ledger.Earnings("pw"): 990}},
		{"capture", capture.Transfer.ID, capture.Transfer, map[ledger.Account]int64{ledger.Wallet(w): -2000,
			ledger.ProviderCosts("openrouter"): 1000, ledger.PlatformFees(): 200, ledger.Earnings("pw"): 800}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.l.GetTransfer(t.Context(), tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.want.ID || got.Kind != tt.want.Kind || got.IdempotencyKey != tt.want.IdempotencyKey ||
				!got.CreatedAt.Equal(tt.want.CreatedAt) || !maps.Equal(got.Metadata, tt.want.Metadata) {
				t.Errorf("GetTransfer = %+v, want %+v", got, tt.want)
			}
			entries := map[ledger.Account]int64{}
			for _, e := range got.Entries {
				if _, dup := entries[e.Account]; dup {
					t.Errorf("account %v has two entries: %+v", e.Account, got.Entries)
				}
				entries[e.Account] = e.AmountMicro
			}
			if !maps.Equal(entries, tt.entries) {
				t.Errorf("entries %v, want %v", entries, tt.entries)
			}
		})
	}
	for _, id := range []string{"4a7c8e4e-0000-4000-8000-000000000000", "not-a-uuid", "", "4a7c8e4e-0000-4000-8000-00000000000g"} {
		_, err := f.l.GetTransfer(ctx, id)
		wantErr(t, err, ledger.ErrTransferNotFound)
	}
}

// TestReversalMetadata: a reversal records the caller's metadata with the reason, its replay
// returns the same, and Reversal finds it from the original; a transfer not reversed has none.
func TestReversalMetadata(t *testing.T) {
	f := newFixture(t, ledger.Options{Shards: 4})
	ctx := t.Context()
	w := addr(1)
	f.fund(w, 10_000)
	ch, err := f.l.Charge(ctx, ledger.ChargeRequest{Key: "ch", Wallet: w, Paywall: "pw", Split: ledger.Split{FeeMicro: 10, DeveloperMicro: 990}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.l.Reversal(ctx, ch.ID)
	wantErr(t, err, ledger.ErrTransferNotFound)

	req := ledger.ReverseRequest{Key: "refund", TransferID: ch.ID, Reason: "service failed",
		Metadata: map[string]string{"paywall": "pw", "user": "alice", "reason": "overridden by Reason"}}
	rev, err := f.l.Reverse(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"paywall": "pw", "user": "alice", "reason": "service failed"}
	if !maps.Equal(rev.Metadata, want) || rev.Reverses != ch.ID {
		t.Errorf("reversal metadata %v, reverses %q; want %v, %s", rev.Metadata, rev.Reverses, want, ch.ID)
	}
	if req.Metadata["reason"] != "overridden by Reason" {
		t.Error("Reverse changed the caller's metadata map")
	}
	// The metadata is not part of the request: a replay with other metadata is the same reversal.
	again, err := f.l.Reverse(ctx, ledger.ReverseRequest{Key: "refund", TransferID: ch.ID})
	if err != nil || again.ID != rev.ID || !maps.Equal(again.Metadata, want) || again.Reverses != ch.ID {
		t.Errorf("replay = %+v, %v", again, err)
	}
	for _, read := range []func() (ledger.Transfer, error){
		func() (ledger.Transfer, error) { return f.l.Reversal(ctx, ch.ID) },
		func() (ledger.Transfer, error) { return f.l.GetTransfer(ctx, rev.ID) },
	} {
		got, err := read()
		if err != nil || got.ID != rev.ID || got.Kind != ledger.KindReversal || !maps.Equal(got.Metadata, want) || got.Reverses != ch.ID {
			t.Errorf("read back %+v, %v; want reversal %s of %s with %v", got, err, rev.ID, ch.ID, want)
		}
	}
	// The wallet's history shows the reversal with its metadata.
	page, err := f.l.History(ctx, ledger.Wallet(w), "", 1)
	if err != nil || len(page.Items) != 1 || page.Items[0].TransferID != rev.ID || page.Items[0].Metadata["paywall"] != "pw" {
		t.Errorf("history = %+v, %v", page, err)
	}
	_, err = f.l.Reversal(ctx, "nope")
	wantErr(t, err, ledger.ErrTransferNotFound)
	f.check()
}
