package siwe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tollgate-dev/tollgate/settlement/eip1271"
)

// Errors of Check and Verify; callers decide with errors.Is.
var (
	// ErrDomain: the message names another domain than the one the user is on.
	ErrDomain = errors.New("siwe: message is for another domain")
	// ErrURI: the message names another URI than the page that asked for it.
	ErrURI = errors.New("siwe: message is for another URI")
	// ErrChain: the chain id is not one this deployment accepts.
	ErrChain = errors.New("siwe: chain id not accepted")
	// ErrRequestID: the request id is not the one this sign-in was started with.
	ErrRequestID = errors.New("siwe: request id does not match")
	// ErrExpired: the message's expiration time has passed, or it was issued too long ago.
	ErrExpired = errors.New("siwe: message expired")
	// ErrNotYetValid: the message's not-before time (or issued-at time) is in the future.
	ErrNotYetValid = errors.New("siwe: message not yet valid")
	// ErrBadSignature: the signature is not the address's, neither by EIP-191 recovery nor by
	// the contract wallet's EIP-1271 answer (for an ERC-6492 signature: the answer of the
	// wallet its factory call deploys).
	ErrBadSignature = errors.New("siwe: signature does not match the address")
	// ErrContractCall: the EIP-1271 eth_call failed (node unreachable); retrying may succeed.
	ErrContractCall = errors.New("siwe: could not ask the contract wallet")
)

// Expect is what the relying party requires of a message.
type Expect struct {
	Domain    string   // must equal the message's domain (host[:port] of the page)
	URI       string   // must equal the message's URI
	ChainIDs  []uint64 // the message's chain id must be one of these
	RequestID string   // when not "", must equal the message's request id
	Now       time.Time
	// MaxAge bounds how old Issued At may be (0: no bound). Clock skew of up to a minute
	// into the future is tolerated for Issued At and Not Before.
	MaxAge time.Duration
}

// skew is how far in the future a wallet's clock may put Issued At.
const skew = time.Minute

// Check compares a parsed message with what the relying party expects.
// It can return: ErrDomain, ErrURI, ErrChain, ErrRequestID, ErrExpired, ErrNotYetValid.
func (m Message) Check(e Expect) error {
	if m.Domain != e.Domain {
		return fmt.Errorf("%w: got %q, want %q", ErrDomain, m.Domain, e.Domain)
	}
	if m.URI != e.URI {
		return fmt.Errorf("%w: got %q, want %q", ErrURI, m.URI, e.URI)
	}
	if !slices.Contains(e.ChainIDs, m.ChainID) {
		return fmt.Errorf("%w: %d (accepted: %v)", ErrChain, m.ChainID, e.ChainIDs)
	}
	if e.RequestID != "" && m.RequestID != e.RequestID {
		return fmt.Errorf("%w", ErrRequestID)
	}
	if !m.ExpirationTime.IsZero() && !e.Now.Before(m.ExpirationTime) {
		return fmt.Errorf("%w: expiration time %s passed", ErrExpired, m.ExpirationTime.Format(time.RFC3339))
	}
	if e.MaxAge > 0 && e.Now.Sub(m.IssuedAt) > e.MaxAge {
		return fmt.Errorf("%w: issued at %s, more than %s ago", ErrExpired, m.IssuedAt.Format(time.RFC3339), e.MaxAge)
	}
	if m.IssuedAt.After(e.Now.Add(skew)) {
		return fmt.Errorf("%w: issued at %s is in the future", ErrNotYetValid, m.IssuedAt.Format(time.RFC3339))
	}
	if !m.NotBefore.IsZero() && m.NotBefore.After(e.Now.Add(skew)) {
		return fmt.Errorf("%w: not before %s", ErrNotYetValid, m.NotBefore.Format(time.RFC3339))
	}
	return nil
}

// Verifier checks signatures over messages.
type Verifier struct {
	// Contracts answers EIP-1271 and ERC-6492 calls (eip1271.Chains); nil means contract
	// wallets are not supported.
	Contracts eip1271.ContractCaller
}

// Verify reports (by a nil error) whether sig is the signature of address over text, the raw
// message as the wallet signed it. An EOA's 65-byte [R || S || V] signature (V 0/1 or 27/28) is
// recovered locally; anything else, or a recovery that gives another address, is asked of the
// address as an EIP-1271 contract on chainID. A smart account that is not deployed yet signs
// with an ERC-6492 wrapper (ending in 0x6492…6492); it is checked by simulating the account's
// deployment and asking it, in one read-only call (eip1271.Check), and nothing is deployed.
// It can return: ErrBadSignature, ErrContractCall.
func (v Verifier) Verify(ctx context.Context, text string, address common.Address, chainID uint64, sig []byte) error {
	hash := accounts.TextHash([]byte(text))
	if len(sig) == crypto.SignatureLength {
		s := bytes.Clone(sig)
		if s[64] >= 27 {
			s[64] -= 27
		}
		if s[64] <= 1 {
			if pub, err := crypto.SigToPub(hash, s); err == nil && crypto.PubkeyToAddress(*pub) == address {
				return nil
			}
		}
	}
	if v.Contracts == nil {
		return ErrBadSignature
	}
	verdict, err := eip1271.Check(ctx, v.Contracts, chainID, address, common.BytesToHash(hash), sig, eip1271.MaxDeployGas)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrContractCall, err)
	case verdict != eip1271.Accepted:
		return fmt.Errorf("%w: %s", ErrBadSignature, verdict.Reason(address))
	}
	return nil
}
