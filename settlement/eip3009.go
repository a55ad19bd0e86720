package settlement

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// EIP-3009 and EIP-712 as FiatToken (USDC) implements them.
var (
	eip712DomainTypeHash = crypto.Keccak256Hash([]byte(
		"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"))
	transferWithAuthorizationTypeHash = crypto.Keccak256Hash([]byte(
		"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
	// secp256k1n / 2: the token refuses signatures with a larger s (their malleable twins).
	secp256k1HalfN, _ = new(big.Int).SetString("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0", 16)
	maxUint256        = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
)

// Authorization is an EIP-3009 TransferWithAuthorization message: From lets Value of the token
// go To, once (Nonce), strictly between ValidAfter and ValidBefore (unix seconds, chain time).
type Authorization struct {
	From        common.Address
	To          common.Address
	Value       *big.Int
	ValidAfter  uint64
	ValidBefore uint64
	Nonce       common.Hash
}

// SignedAuthorization is an authorization with its signature, as the token takes it.
type SignedAuthorization struct {
	Authorization
	// Signature is what the wallet returned, byte for byte: an EOA's 65 bytes r‖s‖v (v 27/28
	// or 0/1), or whatever a contract wallet's isValidSignature takes (EIP-1271): a Safe's
	// owners' signatures, a smart account's wrapped passkey signature, … (1 to
	// maxSignatureBytes bytes). It is kept as it is because a contract wallet checks exactly
	// these bytes.
	Signature []byte
}

// maxSignatureBytes bounds a signature. A Safe's is 65 bytes per owner; a passkey smart
// account's is under 1 KiB.
const maxSignatureBytes = 4096

// NonceFor is the EIP-3009 nonce of a top-up or payout: keccak256 of its id. The id is chosen
// by the database, so the nonce names exactly one intent and the token makes it single-use.
func NonceFor(id string) common.Hash { return crypto.Keccak256Hash([]byte(id)) }

// DomainSeparator is the token's EIP-712 domain separator on this chain.
func (c Chain) DomainSeparator() common.Hash {
	return crypto.Keccak256Hash(
		eip712DomainTypeHash.Bytes(),
		crypto.Keccak256([]byte(c.DomainName)),
		crypto.Keccak256([]byte(c.DomainVersion)),
		common.LeftPadBytes(c.chainID.Bytes(), 32),
		common.LeftPadBytes(c.Token.Bytes(), 32),
	)
}

// Digest is the EIP-712 hash the authorizer signs.
func (c Chain) Digest(a Authorization) common.Hash {
	structHash := crypto.Keccak256Hash(
		transferWithAuthorizationTypeHash.Bytes(),
		common.LeftPadBytes(a.From.Bytes(), 32),
		common.LeftPadBytes(a.To.Bytes(), 32),
		common.LeftPadBytes(a.Value.Bytes(), 32),
		common.LeftPadBytes(new(big.Int).SetUint64(a.ValidAfter).Bytes(), 32),
		common.LeftPadBytes(new(big.Int).SetUint64(a.ValidBefore).Bytes(), 32),
		a.Nonce.Bytes(),
	)
	return crypto.Keccak256Hash([]byte("\x19\x01"), c.DomainSeparator().Bytes(), structHash.Bytes())
}

// Recover returns the address whose key made the authorization's signature on this chain, an
// EOA's 65-byte ECDSA signature as the token takes it (see signatureParts).
// It can return: ErrBadSignature (not such a signature: a contract wallet's, or malformed).
func (c Chain) Recover(sa SignedAuthorization) (common.Address, error) {
	v, r, s, err := sa.ECDSA()
	if err != nil {
		return common.Address{}, err
	}
	sig := make([]byte, 65)
	copy(sig[:32], r[:])
	copy(sig[32:64], s[:])
	sig[64] = v - 27
	pub, err := crypto.SigToPub(c.Digest(sa.Authorization).Bytes(), sig)
	if err != nil {
		return common.Address{}, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return crypto.PubkeyToAddress(*pub), nil
}

// typedData is the JSON a wallet's eth_signTypedData_v4 takes.
type typedData struct {
	Types       map[string][]typedField `json:"types"`
	PrimaryType string                  `json:"primaryType"`
	Domain      typedDomain             `json:"domain"`
	Message     authorizationJSON       `json:"message"`
}

type typedField struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type typedDomain struct {
	Name              string `json:"name"`
	Version           string `json:"version"`
	ChainID           uint64 `json:"chainId"`
	VerifyingContract string `json:"verifyingContract"`
}

// authorizationJSON is an authorization as wallets and x402 clients write it: addresses in hex,
// integers as decimal strings, the nonce as 0x-hex.
type authorizationJSON struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Value       string `json:"value"`
	ValidAfter  string `json:"validAfter"`
	ValidBefore string `json:"validBefore"`
	Nonce       string `json:"nonce"`
}

func toJSON(a Authorization) authorizationJSON {
	return authorizationJSON{
		From:        a.From.Hex(),
		To:          a.To.Hex(),
		Value:       a.Value.String(),
		ValidAfter:  strconv.FormatUint(a.ValidAfter, 10),
		ValidBefore: strconv.FormatUint(a.ValidBefore, 10),
		Nonce:       a.Nonce.Hex(),
	}
}

// TypedData returns the authorization as EIP-712 typed data for eth_signTypedData_v4.
func (c Chain) TypedData(a Authorization) (json.RawMessage, error) {
	if !c.chainID.IsUint64() {
		return nil, fmt.Errorf("settlement: chain id %s does not fit typed data", c.chainID)
	}
	td := typedData{
		Types: map[string][]typedField{
			"EIP712Domain": {
				{"name", "string"}, {"version", "string"}, {"chainId", "uint256"}, {"verifyingContract", "address"},
			},
			"TransferWithAuthorization": {
				{"from", "address"}, {"to", "address"}, {"value", "uint256"},
				{"validAfter", "uint256"}, {"validBefore", "uint256"}, {"nonce", "bytes32"},
			},
		},
		PrimaryType: "TransferWithAuthorization",
		Domain: typedDomain{
			Name:              c.DomainName,
			Version:           c.DomainVersion,
			ChainID:           c.chainID.Uint64(),
			VerifyingContract: c.Token.Hex(),
		},
		Message: toJSON(a),
	}
	return json.Marshal(td)
}

// ParseSignature decodes a wallet's signature in hex (0x optional) as it is: 65 bytes r‖s‖v
// from an EOA, or any other length (1 to 4096 bytes) from a contract wallet. Whose it is, and
// whether it is valid, is decided against the authorization (TopUps.Submit).
// It can return: ErrBadSignature.
func ParseSignature(sigHex string) ([]byte, error) {
	h := strings.TrimPrefix(strings.TrimSpace(sigHex), "0x")
	if h == "" || len(h) > 2*maxSignatureBytes || len(h)%2 != 0 {
		return nil, fmt.Errorf("%w: want 1 to %d bytes as an even number of hex digits, got %d characters", ErrBadSignature, maxSignatureBytes, len(h))
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%w: not hex", ErrBadSignature)
	}
	return raw, nil
}

// ECDSA splits the signature as an EOA's r‖s‖v, with signatureParts' checks.
// It can return: ErrBadSignature.
func (sa SignedAuthorization) ECDSA() (v uint8, r, s common.Hash, err error) {
	return signatureParts(sa.Signature)
}

// signatureParts splits a 65-byte r‖s‖v signature as the token's ECDSA check takes it. V may
// be 27/28 or 0/1; it is returned as 27/28. A high-s signature is refused, as the token would
// refuse it.
// It can return: ErrBadSignature.
func signatureParts(raw []byte) (v uint8, r, s common.Hash, err error) {
	if len(raw) != 65 {
		return 0, r, s, fmt.Errorf("%w: want 65 bytes, got %d", ErrBadSignature, len(raw))
	}
	copy(r[:], raw[:32])
	copy(s[:], raw[32:64])
	v = raw[64]
	if v < 27 {
		v += 27
	}
	if v != 27 && v != 28 {
		return 0, r, s, fmt.Errorf("%w: v must be 27 or 28 (or 0 or 1), got %d", ErrBadSignature, raw[64])
	}
	sn := new(big.Int).SetBytes(s[:])
	if sn.Sign() == 0 || new(big.Int).SetBytes(r[:]).Sign() == 0 {
		return 0, r, s, fmt.Errorf("%w: r and s must not be zero", ErrBadSignature)
	}
	if sn.Cmp(secp256k1HalfN) > 0 {
		return 0, r, s, fmt.Errorf("%w: s is in the upper half of the curve order (a malleable signature)", ErrBadSignature)
	}
	return v, r, s, nil
}

// SignatureHex is the signature as 0x-hex, byte for byte as the wallet made it.
func (sa SignedAuthorization) SignatureHex() string { return "0x" + hex.EncodeToString(sa.Signature) }

// maxPayloadBytes bounds an authorization payload: the largest signature in hex and the
// authorization (under 600 bytes).
const maxPayloadBytes = 2*maxSignatureBytes + 1024

// DecodeAuthorizationPayload parses a signed authorization as a page or an x402-style client
// posts it: {"authorization": {from, to, value, validAfter, validBefore, nonce}, "signature":
// "0x…"}. Integers are decimal strings (or JSON integers); addresses are 0x-hex and, when mixed
// case, must carry a valid EIP-55 checksum. Unknown fields are refused. It checks the form
// only; TopUps.SubmitAuthorization checks the content against the intent.
// It can return: ErrBadAuthorization, ErrBadSignature.
func DecodeAuthorizationPayload(raw []byte) (SignedAuthorization, error) {
	if len(raw) > maxPayloadBytes {
		return SignedAuthorization{}, fmt.Errorf("%w: payload larger than %d bytes", ErrBadAuthorization, maxPayloadBytes)
	}
	var in struct {
		Authorization *struct {
			From        *string    `json:"from"`
			To          *string    `json:"to"`
			Value       *uintField `json:"value"`
			ValidAfter  *uintField `json:"validAfter"`
			ValidBefore *uintField `json:"validBefore"`
			Nonce       *string    `json:"nonce"`
		} `json:"authorization"`
		Signature *string `json:"signature"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return SignedAuthorization{}, fmt.Errorf("%w: %w", ErrBadAuthorization, err)
	}
	if dec.More() {
		return SignedAuthorization{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadAuthorization)
	}
	a := in.Authorization
	if a == nil || a.From == nil || a.To == nil || a.Value == nil || a.ValidAfter == nil || a.ValidBefore == nil || a.Nonce == nil || in.Signature == nil {
		return SignedAuthorization{}, fmt.Errorf("%w: authorization.{from,to,value,validAfter,validBefore,nonce} and signature are all required", ErrBadAuthorization)
	}
	var out SignedAuthorization
	var err error
	if out.From, err = parseAddress("from", *a.From); err != nil {
		return SignedAuthorization{}, err
	}
	if out.To, err = parseAddress("to", *a.To); err != nil {
		return SignedAuthorization{}, err
	}
	out.Value = a.Value.n
	if !a.ValidAfter.n.IsUint64() || !a.ValidBefore.n.IsUint64() {
		return SignedAuthorization{}, fmt.Errorf("%w: validAfter and validBefore must be unix seconds", ErrBadAuthorization)
	}
	out.ValidAfter, out.ValidBefore = a.ValidAfter.n.Uint64(), a.ValidBefore.n.Uint64()
	nonce := strings.TrimPrefix(*a.Nonce, "0x")
	nb, err := hex.DecodeString(nonce)
	if err != nil || len(nb) != 32 || !strings.HasPrefix(*a.Nonce, "0x") {
		return SignedAuthorization{}, fmt.Errorf("%w: nonce must be 0x and 64 hex digits", ErrBadAuthorization)
	}
	out.Nonce = common.BytesToHash(nb)
	if out.Signature, err = ParseSignature(*in.Signature); err != nil {
		return SignedAuthorization{}, err
	}
	return out, nil
}

// uintField is a uint256 written as a decimal string or a JSON integer.
type uintField struct{ n *big.Int }

func (u *uintField) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if s == "" || len(s) > 78 || !isDecimal(s) || (len(s) > 1 && s[0] == '0') {
		return fmt.Errorf("%w: %s is not a decimal unsigned integer", ErrBadAuthorization, b)
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Cmp(maxUint256) > 0 {
		return fmt.Errorf("%w: %s does not fit uint256", ErrBadAuthorization, b)
	}
	u.n = n
	return nil
}

func isDecimal(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// parseAddress accepts a 0x address in lower or upper case, or mixed case with a valid EIP-55
// checksum (a wrong checksum usually means a mistyped address).
func parseAddress(field, s string) (common.Address, error) {
	if len(s) != 42 || !strings.HasPrefix(s, "0x") {
		return common.Address{}, fmt.Errorf("%w: %s must be 0x and 40 hex digits", ErrBadAuthorization, field)
	}
	b, err := hex.DecodeString(s[2:])
	if err != nil {
		return common.Address{}, fmt.Errorf("%w: %s must be 0x and 40 hex digits", ErrBadAuthorization, field)
	}
	a := common.BytesToAddress(b)
	body := s[2:]
	if body != strings.ToLower(body) && body != strings.ToUpper(body) && a.Hex() != s {
		return common.Address{}, fmt.Errorf("%w: %s has a wrong EIP-55 checksum", ErrBadAuthorization, field)
	}
	return a, nil
}
