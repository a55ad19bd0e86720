package settlement

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// Signer holds the hot wallet's key. LocalSigner keeps it in memory; RPCSigner leaves it in a
// remote signer (Web3Signer). Implementations never log the key.
type Signer interface {
	// Address is the hot wallet.
	Address() common.Address
	// SignTx signs a transaction for the chain.
	SignTx(ctx context.Context, tx *types.Transaction, chainID *big.Int) (*types.Transaction, error)
	// SignAuthorization signs an EIP-3009 authorization of chain c (EIP-712) and returns r‖s‖v
	// with v in {27, 28}.
	SignAuthorization(ctx context.Context, c Chain, a Authorization) ([]byte, error)
}

// LocalSigner signs with a private key held in memory. Its String, GoString and LogValue show
// the address only.
type LocalSigner struct {
	key  *ecdsa.PrivateKey
	addr common.Address
}

// NewLocalSigner reads a hex private key (0x optional). The error never contains the key.
func NewLocalSigner(hexKey string) (*LocalSigner, error) {
	key, err := crypto.HexToECDSA(strings.TrimPrefix(strings.TrimSpace(hexKey), "0x"))
	if err != nil {
		return nil, errors.New("settlement: the hot wallet private key is not 64 hex digits of a valid secp256k1 key")
	}
	return &LocalSigner{key: key, addr: crypto.PubkeyToAddress(key.PublicKey)}, nil
}

// NewLocalSignerFromKey wraps a key, for tests.
func NewLocalSignerFromKey(key *ecdsa.PrivateKey) *LocalSigner {
	return &LocalSigner{key: key, addr: crypto.PubkeyToAddress(key.PublicKey)}
}

// LoadLocalSigner reads the key from the configured value or file (exactly one is set).
func LoadLocalSigner(privateKey, privateKeyFile string) (*LocalSigner, error) {
	switch {
	case privateKey != "" && privateKeyFile != "":
		return nil, errors.New("settlement: set the hot wallet's private_key or private_key_file, not both")
	case privateKey != "":
		return NewLocalSigner(privateKey)
	case privateKeyFile != "":
		raw, err := os.ReadFile(privateKeyFile) //nolint:gosec // G304: reading the operator's configured key file is the point
		if err != nil {
			return nil, fmt.Errorf("settlement: read hot wallet key file: %w", err)
		}
		return NewLocalSigner(string(raw))
	default:
		return nil, errors.New("settlement: settle.hot_wallet needs private_key (or TOLLGATE_SETTLE_HOT_WALLET_PRIVATE_KEY), private_key_file, or signer_url with address")
	}
}

// Address is the hot wallet.
func (s *LocalSigner) Address() common.Address { return s.addr }

// SignTx signs tx with the London signer of chainID.
func (s *LocalSigner) SignTx(_ context.Context, tx *types.Transaction, chainID *big.Int) (*types.Transaction, error) {
	return types.SignTx(tx, types.LatestSignerForChainID(chainID), s.key)
}

// SignAuthorization signs the authorization's EIP-712 digest.
func (s *LocalSigner) SignAuthorization(ctx context.Context, c Chain, a Authorization) ([]byte, error) {
	return s.SignDigest(ctx, c.Digest(a))
}

// SignDigest signs a 32-byte digest. crypto.Sign already returns a low s.
func (s *LocalSigner) SignDigest(_ context.Context, digest common.Hash) ([]byte, error) {
	sig, err := crypto.Sign(digest.Bytes(), s.key)
	if err != nil {
		return nil, err
	}
	sig[64] += 27
	return sig, nil
}

// String shows the address, never the key.
func (s *LocalSigner) String() string { return "local signer " + s.addr.Hex() }

// GoString shows the address, never the key (for %#v).
func (s *LocalSigner) GoString() string { return s.String() }

// LogValue shows the address, never the key.
func (s *LocalSigner) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", "local"), slog.String("address", s.addr.Hex()))
}

// signAuthorization has signer sign a on chain c, and checks the signature: 65 bytes, a low s
// (the token refuses a high one) and recovering to the signer's address — a remote signer that
// signed something else, or with another key, is caught here rather than by a reverted
// transaction.
func signAuthorization(ctx context.Context, signer Signer, c Chain, a Authorization) (SignedAuthorization, error) {
	raw, err := signer.SignAuthorization(ctx, c, a)
	if err != nil {
		return SignedAuthorization{}, fmt.Errorf("sign authorization: %w", err)
	}
	sa := SignedAuthorization{Authorization: a, Signature: raw}
	who, err := c.Recover(sa)
	switch {
	case err != nil:
		return SignedAuthorization{}, fmt.Errorf("sign authorization: %w", err)
	case who != signer.Address():
		return SignedAuthorization{}, fmt.Errorf("sign authorization: the signature is %s's, not the hot wallet %s's", who.Hex(), signer.Address().Hex())
	}
	return sa, nil
}
