package settlement

import (
	"bytes"
	"errors"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// TestClassify reads the revert reasons of FiatToken and TestUSDC as geth and anvil word them,
// and tells reverts from transport trouble (which must never count as a failed payout).
func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want failure
	}{
		{"execution reverted: Pausable: paused", failPaused},
		{"execution reverted: revert: Blacklistable: account is blacklisted", failBlacklisted},
		{"execution reverted: ERC20: transfer amount exceeds balance", failBalance},
		{"execution reverted: FiatTokenV2: authorization is used or canceled", failUsed},
		{"execution reverted: FiatTokenV2: authorization is expired", failExpired},
		{"execution reverted: FiatTokenV2: authorization is not yet valid", failExpired},
		{"execution reverted: FiatTokenV2: invalid signature", failSignature},
		{"execution reverted", failUnknown},
		{"insufficient funds for gas * price + value: have 0 want 1", failGas},
		{"Post \"http://127.0.0.1:1\": dial tcp 127.0.0.1:1: connect: connection refused", failTransport},
		{"context deadline exceeded", failTransport},
	} {
		if got := classify(errors.New(tt.msg)); got != tt.want {
			t.Errorf("classify(%q) = %d, want %d", tt.msg, got, tt.want)
		}
	}
}

// FiatToken's two transferWithAuthorization selectors, from their signatures: the v,r,s form an
// EOA's signature is relayed in, and the bytes form for a contract wallet's (EIP-1271).
var (
	selectorVRS   = crypto.Keccak256([]byte("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"))[:4]
	selectorBytes = crypto.Keccak256([]byte("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"))[:4]
)

// TestTransferCallSelectors pins which form of transferWithAuthorization a signature is relayed
// in, by FiatToken's selectors: the wallet's own ECDSA signature in the v,r,s form (v 0/1 as
// 27/28), anything else — a contract wallet's — in the bytes form with its bytes unchanged.
func TestTransferCallSelectors(t *testing.T) {
	c := testChain()
	key := chaintest.Key(t)
	a := Authorization{From: addrOf(key), To: common.HexToAddress("0xbb"), Value: big.NewInt(5), ValidAfter: 1, ValidBefore: 2, Nonce: NonceFor("x")}
	own, err := signAuthorization(t.Context(), NewLocalSignerFromKey(key), c, a)
	if err != nil {
		t.Fatal(err)
	}
	lowV := bytes.Clone(own.Signature)
	lowV[64] -= 27
	other, err := signAuthorization(t.Context(), NewLocalSignerFromKey(chaintest.Key(t)), c, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		sig        []byte
		byContract bool
	}{
		{"the wallet's own signature", own.Signature, false},
		{"the wallet's own, v 0/1", lowV, false},
		{"another key's (a contract wallet's owner)", other.Signature, true},
		{"66 bytes", append(bytes.Clone(own.Signature), 0), true},
		{"a long one", bytes.Repeat([]byte{7}, 300), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, byContract := c.transferCall(SignedAuthorization{Authorization: a, Signature: tt.sig})
			if byContract != tt.byContract {
				t.Fatalf("byContract = %v", byContract)
			}
			want := selectorVRS
			if byContract {
				want = selectorBytes
			}
			if !bytes.Equal(data[:4], want) {
				t.Fatalf("selector %x, want %x", data[:4], want)
			}
			if !byContract {
				return
			}
			args, err := usdc.GetABI().Methods["transferWithAuthorization"].Inputs.Unpack(data[4:])
			if err != nil {
				t.Fatal(err)
			}
			if got := args[6].([]byte); !bytes.Equal(got, tt.sig) {
				t.Fatalf("relayed signature %x, want %x", got, tt.sig)
			}
		})
	}
}

// TestHasRevertReason: only an Error(string) in the revert data is a reason; a revert without
// data (a missing function) or a transport error is not.
func TestHasRevertReason(t *testing.T) {
	reason := "0x08c379a0" + "0000000000000000000000000000000000000000000000000000000000000020" +
		"0000000000000000000000000000000000000000000000000000000000000004" + "6e6f706500000000000000000000000000000000000000000000000000000000"
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"Error(string)", dataError{"execution reverted: nope", reason}, true},
		{"empty revert data", dataError{"execution reverted", "0x"}, false},
		{"no data", errors.New("execution reverted"), false},
		{"transport", errors.New("connection refused"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := hasRevertReason(tt.err); got != tt.want {
				t.Fatalf("hasRevertReason = %v", got)
			}
		})
	}
}

// dataError is a JSON-RPC error with revert data, as go-ethereum's client returns it.
type dataError struct{ msg, data string }

func (e dataError) Error() string          { return e.msg }
func (e dataError) ErrorData() interface{} { return e.data }
