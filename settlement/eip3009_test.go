package settlement

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// FuzzDecodeAuthorization feeds arbitrary page input to the authorization decoder and checks
// that it never panics, that every refusal is one of the documented errors, that what it accepts
// survives a round trip, and that nothing but the intent's exact authorization signed by the
// intent's wallet passes the checks SubmitAuthorization makes.
func FuzzDecodeAuthorization(f *testing.F) {
	key, _ := crypto.HexToECDSA("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
	c := testChain()
	intent := Authorization{
		From:        crypto.PubkeyToAddress(key.PublicKey),
		To:          common.HexToAddress("0x00000000000000000000000000000000000000bb"),
		Value:       big.NewInt(1_000_000),
		ValidAfter:  1_700_000_000,
		ValidBefore: 1_700_003_600,
		Nonce:       NonceFor("6f1c1c59-1b43-4f58-9d7c-5a3d9a0b7f10"),
	}
	sa, err := signAuthorization(f.Context(), NewLocalSignerFromKey(key), c, intent)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(map[string]any{"authorization": toJSON(intent), "signature": sa.SignatureHex()})
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), `"1000000"`, `1000000`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"1000000"`, `"1000001"`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"validAfter":"1700000000"`, `"validAfter":"01700000000"`, 1)))
	f.Add([]byte(strings.ToLower(string(good))))
	f.Add([]byte(`{"authorization":{"from":"0x","to":"","value":"-1","validAfter":"x","validBefore":1e3,"nonce":"0x00"},"signature":"0x"}`))
	f.Add([]byte(`{"authorization":null,"signature":null}`))
	f.Add([]byte(`{"authorization":{},"signature":"","extra":1}`))
	f.Add([]byte(`{}{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("\xff\xfe"))

	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := DecodeAuthorizationPayload(raw)
		if err != nil {
			if !errors.Is(err, ErrBadAuthorization) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if got.Value == nil || got.Value.Sign() < 0 || len(got.Signature) == 0 || len(got.Signature) > maxSignatureBytes {
			t.Fatalf("accepted an impossible authorization: %+v", got)
		}
		again, err := DecodeAuthorizationPayload(mustJSON(t, map[string]any{"authorization": toJSON(got.Authorization), "signature": got.SignatureHex()}))
		if err != nil {
			t.Fatalf("re-encoded payload does not decode: %v", err)
		}
		if again.SignatureHex() != got.SignatureHex() || matchIntent(got.Authorization, again.Authorization) != nil {
			t.Fatalf("round trip changed the authorization: %+v vs %+v", got, again)
		}
		if matchIntent(intent, got.Authorization) != nil {
			return
		}
		signer, err := c.Recover(got)
		if err == nil && signer == intent.From && !sameECDSA(got, sa) {
			// Another valid signature of the same message by the same key would be fine, but a
			// fuzzer cannot forge one: reaching here means Recover is broken.
			t.Fatalf("a different signature recovered to the wallet: %s", got.SignatureHex())
		}
	})
}

// sameECDSA reports whether two signatures are the same r‖s‖v, v 0/1 and 27/28 alike.
func sameECDSA(a, b SignedAuthorization) bool {
	av, ar, as, aerr := a.ECDSA()
	bv, br, bs, berr := b.ECDSA()
	return aerr == nil && berr == nil && av == bv && ar == br && as == bs
}

// FuzzParseSignature: any input either is refused with ErrBadSignature or decodes to 1 to
// maxSignatureBytes bytes that print back as the same hex; a 65-byte result splits as ECDSA or
// is refused with ErrBadSignature, never a panic.
func FuzzParseSignature(f *testing.F) {
	f.Add("0x" + strings.Repeat("11", 32) + strings.Repeat("22", 32) + "1b")
	f.Add(strings.Repeat("ab", 65))
	f.Add("0x" + strings.Repeat("11", 32) + "ff" + strings.Repeat("22", 31) + "00")
	f.Add("0x" + strings.Repeat("00", 65*3)) // a Safe's three owners
	f.Add("0x")
	f.Add("0x1")
	f.Add(" 0xAbCd ")
	f.Add("0xzz")
	f.Fuzz(func(t *testing.T, in string) {
		sig, err := ParseSignature(in)
		if err != nil {
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if len(sig) == 0 || len(sig) > maxSignatureBytes {
			t.Fatalf("accepted %d bytes", len(sig))
		}
		sa := SignedAuthorization{Signature: sig}
		if again, err := ParseSignature(sa.SignatureHex()); err != nil || !bytes.Equal(again, sig) {
			t.Fatalf("round trip: %x, %v", again, err)
		}
		if v, _, _, err := sa.ECDSA(); err == nil && (len(sig) != 65 || (v != 27 && v != 28)) {
			t.Fatalf("ECDSA accepted %d bytes with v %d", len(sig), v)
		} else if err != nil && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("undocumented ECDSA error: %v", err)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeAuthorizationPayloadChecksum(t *testing.T) {
	a := Authorization{
		From: common.HexToAddress("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"), To: common.HexToAddress("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"),
		Value: big.NewInt(1), ValidAfter: 0, ValidBefore: 10, Nonce: NonceFor("x"),
	}
	sig := "0x" + strings.Repeat("11", 64) + "1b"
	ok := mustJSON(t, map[string]any{"authorization": toJSON(a), "signature": sig})
	if _, err := DecodeAuthorizationPayload(ok); err != nil {
		t.Fatalf("checksummed addresses refused: %v", err)
	}
	bad := strings.Replace(string(ok), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", 1)
	if _, err := DecodeAuthorizationPayload([]byte(bad)); !errors.Is(err, ErrBadAuthorization) {
		t.Fatalf("wrong checksum: err = %v", err)
	}
	huge := strings.Replace(string(ok), `"value":"1"`, `"value":"`+strings.Repeat("9", 78)+`"`, 1)
	if _, err := DecodeAuthorizationPayload([]byte(huge)); !errors.Is(err, ErrBadAuthorization) {
		t.Fatalf("value above uint256: err = %v", err)
	}
}
