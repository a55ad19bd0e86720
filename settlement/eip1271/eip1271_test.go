package eip1271

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// answer is a node that answers every call with out and err, and keeps the last call's data.
type answer struct {
	out  []byte
	err  error
	data *[]byte
}

func (a answer) CallContract(_ context.Context, _ uint64, _ *common.Address, data []byte) ([]byte, error) {
	*a.data = data
	return a.out, a.err
}

// TestIsValidSignature reads the answers as USDC's SignatureChecker does, and encodes the
// question as the ABI does (selector, hash, offset, length, the signature zero-padded).
func TestIsValidSignature(t *testing.T) {
	word := func(b ...byte) []byte { return append(b, make([]byte, 32-len(b))...) }
	yes := word(0x16, 0x26, 0xba, 0x7e)
	for _, tt := range []struct {
		name    string
		out     []byte
		err     error
		want    bool
		wantErr bool
	}{
		{"magic word", yes, nil, true, false},
		{"magic word and more", append(bytes.Clone(yes), word()...), nil, true, false},
		{"magic without padding", yes[:4], nil, false, false},
		{"magic with dirty padding", append(yes[:31:31], 1), nil, false, false},
		{"other value", word(0xff, 0xff, 0xff, 0xff), nil, false, false},
		{"no code (empty answer)", nil, nil, false, false},
		{"revert", nil, ErrReverted, false, false},
		{"node down", nil, errors.New("connection refused"), false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var data []byte
			ok, err := IsValidSignature(t.Context(), answer{tt.out, tt.err, &data}, 1, common.Address{1}, common.Hash{2}, []byte{3, 4, 5})
			if ok != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("IsValidSignature = %v, %v", ok, err)
			}
			selector := crypto.Keccak256([]byte("isValidSignature(bytes32,bytes)"))[:4]
			want := bytes.Join([][]byte{selector, common.Hash{2}.Bytes(), common.LeftPadBytes([]byte{64}, 32),
				common.LeftPadBytes([]byte{3}, 32), word(3, 4, 5)}, nil)
			if !bytes.Equal(data, want) {
				t.Fatalf("call data %x, want %x", data, want)
			}
		})
	}
}

// deadlineCaller is a node that records the deadline of the call it is asked.
type deadlineCaller struct{ deadline *time.Time }

func (d deadlineCaller) CallContract(ctx context.Context, _ uint64, _ *common.Address, _ []byte) ([]byte, error) {
	*d.deadline, _ = ctx.Deadline()
	return nil, ErrReverted
}

// TestCheckBoundsTheCall: Check asks the node within CallTimeout, for a plain EIP-1271
// signature and an ERC-6492 one alike, so that neither sign-in nor a top-up waits on a node
// that does not answer.
func TestCheckBoundsTheCall(t *testing.T) {
	for name, sig := range map[string][]byte{
		"EIP-1271": {1, 2, 3},
		"ERC-6492": Wrapped{Factory: common.Address{9}, Signature: []byte{1}}.Encode(),
	} {
		t.Run(name, func(t *testing.T) {
			var deadline time.Time
			start := time.Now()
			if _, err := Check(t.Context(), deadlineCaller{&deadline}, 1, common.Address{1}, common.Hash{2}, sig, MaxDeployGas); err != nil {
				t.Fatal(err)
			}
			if deadline.IsZero() || deadline.Before(start) || deadline.After(time.Now().Add(CallTimeout)) {
				t.Fatalf("call deadline %v, want within %v of %v", deadline, CallTimeout, start)
			}
		})
	}
}
