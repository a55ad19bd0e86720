// Package devchain prepares a local anvil chain for `make run` and docker compose, and plays a
// user's wallet in the curl walk-through (docs/e2e.md). Development only: it uses anvil's
// well-known keys. e2e/cmd/devchain is the command; tests run Run in-process.
//
//	devchain -rpc URL [-token 0x…] [-mint 0xWALLET=100.5]…   the test USDC (deployed once, at TokenAddress), mints; prints its address
//	devchain sign [-key 0x…] < message                       EIP-191 personal_sign of stdin (a Sign-In with Ethereum message)
//	devchain sign-typed [-key 0x…] < typed-data.json         eth_signTypedData_v4 of stdin (a top-up's TransferWithAuthorization)
//	devchain balance [-rpc URL] [-token 0x…] 0xADDRESS…       the test USDC each address holds on chain
//
// The token is always the first contract anvil's account #0 deploys, so its address is fixed
// (TokenAddress) and configuration can name it before the chain exists. Run again on the same
// chain, devchain finds the token there and deploys nothing: it is safe to repeat (docker
// compose re-runs its one-shot service on every `up`). Mints are not idempotent: each run mints
// again (test USDC).
//
// The default -key of sign and sign-typed is anvil's account #2
// (0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC), the demo user's wallet.
package devchain

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// Anvil's well-known development keys (public knowledge; anvil derives them from its default
// mnemonic). #0 deploys the token and is the hot wallet of `make run` and compose, #1 their
// treasury, #2 the demo user's wallet.
const (
	AnvilKey0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
	AnvilKey1 = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
	AnvilKey2 = "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
)

// Address returns the address of a hex private key such as AnvilKey0.
func Address(hexKey string) (common.Address, error) {
	k, err := crypto.HexToECDSA(strings.TrimPrefix(hexKey, "0x"))
	if err != nil {
		return common.Address{}, err
	}
	return crypto.PubkeyToAddress(k.PublicKey), nil
}

// TokenAddress is where the test USDC lives on a chain devchain prepared: the first contract
// created by anvil's account #0 (nonce 0), 0x5FbDB2315678afecb367f032d93F642f64180aa3.
func TokenAddress() common.Address {
	deployer, _ := Address(AnvilKey0) // a constant that parses
	return crypto.CreateAddress(deployer, 0)
}

// ErrChainUsed means account #0 already sent transactions but the token is not at
// TokenAddress, so deploying now would put it elsewhere.
var ErrChainUsed = errors.New("devchain: account #0 has already sent transactions and the test USDC is not at its address")

// Run runs devchain with args (without the program name). It can return ErrChainUsed, and
// the errors of flag parsing, the node and signing.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "sign" || args[0] == "sign-typed") {
		return sign(args[0], args[1:], stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "balance" {
		return balance(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("devchain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rpc := fs.String("rpc", "http://127.0.0.1:8545", "anvil's JSON-RPC `url`")
	name := fs.String("name", "USD Coin", "the token's EIP-712 name")
	token := fs.String("token", "", "use this deployed token instead of the one at "+TokenAddress().Hex())
	var mints []string
	fs.Func("mint", "ADDRESS=USDC: mint test USDC to an address (repeatable)", func(v string) error { mints = append(mints, v); return nil })
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("devchain: unexpected argument %q", fs.Arg(0))
	}
	client, err := ethclient.DialContext(ctx, *rpc)
	if err != nil {
		return fmt.Errorf("devchain: -rpc %s: %w", *rpc, err)
	}
	defer client.Close()
	key, err := crypto.HexToECDSA(AnvilKey0)
	if err != nil {
		return err
	}
	s := chaintest.Sender{Client: client}
	addr := common.HexToAddress(*token)
	if *token == "" {
		if addr, err = ensureToken(ctx, client, s, key, *name, stderr); err != nil {
			return err
		}
	}
	for _, m := range mints {
		to, amount, ok := strings.Cut(m, "=")
		if !ok || !common.IsHexAddress(to) {
			return fmt.Errorf("devchain: -mint %q: want 0xADDRESS=USDC", m)
		}
		micro, err := parseMicro(amount)
		if err != nil {
			return fmt.Errorf("devchain: -mint %q: %w", m, err)
		}
		if err := s.Mint(ctx, key, addr, common.HexToAddress(to), micro); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(stdout, addr.Hex())
	return err
}

// ensureToken returns the token at TokenAddress, deploying it first on a fresh chain.
func ensureToken(ctx context.Context, client *ethclient.Client, s chaintest.Sender, key *ecdsa.PrivateKey, name string, stderr io.Writer) (common.Address, error) {
	want := TokenAddress()
	code, err := client.CodeAt(ctx, want, nil)
	if err != nil {
		return common.Address{}, err
	}
	if len(code) > 0 {
		got, err := s.Call(ctx, want, chaintest.Token.PackName())
		if err != nil {
			return common.Address{}, fmt.Errorf("devchain: the contract at %s does not answer name(): %w", want.Hex(), err)
		}
		n, err := chaintest.Token.UnpackName(got)
		if err != nil {
			return common.Address{}, fmt.Errorf("devchain: the contract at %s is not the test USDC: name(): %w", want.Hex(), err)
		}
		if n != name {
			return common.Address{}, fmt.Errorf("devchain: the contract at %s is not the test USDC named %q (its name is %q)", want.Hex(), name, n)
		}
		_, err = fmt.Fprintf(stderr, "devchain: the test USDC is already at %s\n", want.Hex())
		return want, err
	}
	nonce, err := client.NonceAt(ctx, crypto.PubkeyToAddress(key.PublicKey), nil)
	if err != nil {
		return common.Address{}, err
	}
	if nonce != 0 {
		return common.Address{}, fmt.Errorf("%w (%s); start from a fresh anvil, or pass -token", ErrChainUsed, want.Hex())
	}
	addr, err := s.DeployToken(ctx, key, name)
	if err != nil {
		return common.Address{}, err
	}
	if addr != want {
		return common.Address{}, fmt.Errorf("devchain: the token was deployed at %s, not %s", addr.Hex(), want.Hex())
	}
	_, err = fmt.Fprintf(stderr, "devchain: deployed the test USDC at %s\n", addr.Hex())
	return addr, err
}

// balance prints the test USDC each address holds, one "ADDRESS AMOUNT" line each.
func balance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devchain balance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rpc := fs.String("rpc", "http://127.0.0.1:8545", "anvil's JSON-RPC `url`")
	token := fs.String("token", TokenAddress().Hex(), "the token's `address`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("devchain balance: name at least one 0xADDRESS")
	}
	client, err := ethclient.DialContext(ctx, *rpc)
	if err != nil {
		return fmt.Errorf("devchain: -rpc %s: %w", *rpc, err)
	}
	defer client.Close()
	s := chaintest.Sender{Client: client}
	for _, a := range fs.Args() {
		if !common.IsHexAddress(a) {
			return fmt.Errorf("devchain balance: %q is not a 0x address", a)
		}
		micro, err := s.BalanceOf(ctx, common.HexToAddress(*token), common.HexToAddress(a))
		if err != nil {
			return fmt.Errorf("devchain balance: %w", err)
		}
		if _, err := fmt.Fprintf(stdout, "%s %d.%06d USDC\n", common.HexToAddress(a).Hex(), micro/1_000_000, micro%1_000_000); err != nil {
			return err
		}
	}
	return nil
}

// parseMicro reads a positive USDC amount with at most 6 decimal places, exactly.
func parseMicro(s string) (int64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 6 {
		return 0, fmt.Errorf("amount %q has more than 6 decimal places", s)
	}
	frac += strings.Repeat("0", 6-len(frac))
	w, err1 := strconv.ParseInt(whole, 10, 64)
	f, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil || w < 0 || w > 1e12 || f < 0 || (w == 0 && f == 0) {
		return 0, fmt.Errorf("amount %q is not a positive decimal", s)
	}
	return w*1_000_000 + f, nil
}

// sign signs stdin with a key: EIP-191 for "sign", EIP-712 (typed data JSON) for "sign-typed".
func sign(mode string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devchain "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	hexKey := fs.String("key", AnvilKey2, "private `key` (hex)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key, err := crypto.HexToECDSA(strings.TrimPrefix(*hexKey, "0x"))
	if err != nil {
		return err
	}
	in, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	var hash []byte
	if mode == "sign" {
		hash = accounts.TextHash(in)
	} else {
		var td apitypes.TypedData
		if err := json.Unmarshal(in, &td); err != nil {
			return fmt.Errorf("devchain: typed data: %w", err)
		}
		if hash, _, err = apitypes.TypedDataAndHash(td); err != nil {
			return fmt.Errorf("devchain: typed data: %w", err)
		}
	}
	sig, err := crypto.Sign(hash, key)
	if err != nil {
		return err
	}
	sig[64] += 27
	_, err = fmt.Fprintln(stdout, hexutil.Encode(sig))
	return err
}
