package extproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

const (
	opCapture = "capture"
	opVoid    = "void"
)

// settlement is one capture or void as the settler retries it: everything another attempt
// needs, in this process or, through the journal, in another replica (encodeSettlement).
type settlement struct {
	Op        string // opCapture or opVoid
	RequestID string
	HoldID    string
	// Deadline is when to stop trying: shortly before the hold expires (a capture after the
	// expiry could only fail, and the sweeper may be releasing the hold).
	Deadline time.Time
	Capture  *ledger.CaptureRequest // opCapture: the capture, with its idempotency key
	// Reason is why a capture's usage is an estimate (for the metrics).
	Reason string

	// What follows lives in this process only.

	// refine, if set, asks the provider for its record of the usage and returns the capture to
	// make in place of the estimate (an error wrapping errNoRecord: there will be none worth
	// waiting for); it is asked again, with the settler's backoff, until refineUntil, and then
	// the estimate is charged. A replica that takes the settlement over charges what the
	// journal holds (the estimate, or the provider's figures once they were journaled).
	refine      func(context.Context) (*ledger.CaptureRequest, error)
	refineUntil time.Time
	// journaled: the journal holds the settlement, leased to this replica.
	journaled bool
}

// errNoRecord marks a provider's record of a generation that cannot be used (unreadable, or
// usage that cannot be priced): asking again would not help.
var errNoRecord = errors.New("extproc: no usable record of the usage from the provider")

// journalID names a settlement in the journal.
func (st *settlement) journalID() string { return st.Op + ":" + st.RequestID }

// final are the errors of st that no retry can change.
func (st *settlement) final() []error {
	if st.Op == opCapture {
		return captureFinal
	}
	return voidFinal
}

// journalEntry is a settlement as the journal stores it, in names of its own, so that replicas
// of different versions read each other's entries.
type journalEntry struct {
	Op        string          `json:"op"`
	RequestID string          `json:"request_id"`
	HoldID    string          `json:"hold_id"`
	Deadline  time.Time       `json:"deadline"`
	Capture   *journalCapture `json:"capture,omitempty"`
	Reason    string          `json:"reason,omitempty"`
}

type journalCapture struct {
	Key            string            `json:"key"`
	HoldID         string            `json:"hold_id"`
	ProviderMicro  int64             `json:"provider_micro"`
	Provider       string            `json:"provider,omitempty"`
	FeeMicro       int64             `json:"fee_micro"`
	DeveloperMicro int64             `json:"developer_micro"`
	Estimated      bool              `json:"estimated,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

// encodeSettlement is the journal's form of st.
func encodeSettlement(st *settlement) ([]byte, error) {
	e := journalEntry{Op: st.Op, RequestID: st.RequestID, HoldID: st.HoldID, Deadline: st.Deadline, Reason: st.Reason}
	if r := st.Capture; r != nil {
		e.Capture = &journalCapture{Key: r.Key, HoldID: r.HoldID, ProviderMicro: r.Split.ProviderMicro, Provider: r.Split.Provider,
			FeeMicro: r.Split.FeeMicro, DeveloperMicro: r.Split.DeveloperMicro, Estimated: r.Estimated, Metadata: r.Metadata}
	}
	return json.Marshal(e)
}

// decodeSettlement reads a settlement from the journal. It refuses one that could not be
// attempted: an unknown op, a missing request or hold id, a capture without its request or
// whose request names another hold.
func decodeSettlement(data []byte) (*settlement, error) {
	var e journalEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("extproc: journal entry: %w", err)
	}
	c := e.Capture
	switch {
	case e.Op != opCapture && e.Op != opVoid:
		return nil, fmt.Errorf("extproc: journal entry: unknown op %q", e.Op)
	case e.RequestID == "" || e.HoldID == "":
		return nil, errors.New("extproc: journal entry: no request or hold id")
	case e.Deadline.IsZero():
		return nil, errors.New("extproc: journal entry: no deadline")
	case e.Op == opCapture && c == nil:
		return nil, errors.New("extproc: journal entry: a capture without its request")
	case e.Op == opCapture && (c.HoldID != e.HoldID || c.Key == ""):
		return nil, fmt.Errorf("extproc: journal entry: capture of hold %q with key %q for hold %q", c.HoldID, c.Key, e.HoldID)
	case e.Op == opVoid && c != nil:
		return nil, errors.New("extproc: journal entry: a void with a capture request")
	}
	st := &settlement{Op: e.Op, RequestID: e.RequestID, HoldID: e.HoldID, Deadline: e.Deadline, Reason: e.Reason, journaled: true}
	if c != nil {
		st.Capture = &ledger.CaptureRequest{Key: c.Key, HoldID: c.HoldID, Estimated: c.Estimated, Metadata: c.Metadata,
			Split: ledger.Split{ProviderMicro: c.ProviderMicro, Provider: c.Provider, FeeMicro: c.FeeMicro, DeveloperMicro: c.DeveloperMicro}}
	}
	return st, nil
}
