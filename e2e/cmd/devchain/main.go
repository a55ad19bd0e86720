// Command devchain prepares a local anvil chain for `make run` and plays a user's wallet in the
// curl walk-through (docs/e2e.md). Development only: it uses anvil's well-known keys.
//
//	devchain -rpc URL [-token 0x…] [-mint 0xWALLET=100.5]   deploy TestUSDC (or reuse -token), mint, print its address
//	devchain sign [-key 0x…] < message                      EIP-191 personal_sign of stdin (a Sign-In with Ethereum message)
//	devchain sign-typed [-key 0x…] < typed-data.json        eth_signTypedData_v4 of stdin (a top-up's TransferWithAuthorization)
//
// The default -key of sign and sign-typed is anvil's account #2
// (0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC), the demo user's wallet.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// anvilKey2 is anvil's account #2, the demo user's wallet (public knowledge).
const anvilKey2 = "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"

// anvilKey0 is the private key of anvil's first development account (public knowledge).
const anvilKey0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devchain:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "sign" || args[0] == "sign-typed") {
		return sign(args[0], args[1:], os.Stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("devchain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rpc := fs.String("rpc", "http://127.0.0.1:8545", "anvil's JSON-RPC `url`")
	name := fs.String("name", "USD Coin", "the token's EIP-712 name")
	token := fs.String("token", "", "use this deployed token instead of deploying one")
	var mints []string
	fs.Func("mint", "ADDRESS=USDC: mint test USDC to an address (repeatable)", func(v string) error { mints = append(mints, v); return nil })
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := ethclient.DialContext(ctx, *rpc)
	if err != nil {
		return err
	}
	defer client.Close()
	key, err := crypto.HexToECDSA(anvilKey0)
	if err != nil {
		return err
	}
	s := chaintest.Sender{Client: client}
	addr := common.HexToAddress(*token)
	if *token == "" {
		if addr, err = s.DeployToken(ctx, key, *name); err != nil {
			return err
		}
	}
	for _, m := range mints {
		to, amount, ok := strings.Cut(m, "=")
		if !ok || !common.IsHexAddress(to) {
			return fmt.Errorf("-mint %q: want 0xADDRESS=USDC", m)
		}
		micro, err := parseMicro(amount)
		if err != nil {
			return fmt.Errorf("-mint %q: %w", m, err)
		}
		if err := s.Mint(ctx, key, addr, common.HexToAddress(to), micro); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, addr.Hex())
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
	if err1 != nil || err2 != nil || w < 0 || w > 1e12 || (w == 0 && f == 0) {
		return 0, fmt.Errorf("amount %q is not a positive decimal", s)
	}
	return w*1_000_000 + f, nil
}

// sign signs stdin with a key: EIP-191 for "sign", EIP-712 (typed data JSON) for "sign-typed".
func sign(mode string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devchain "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	hexKey := fs.String("key", anvilKey2, "private `key` (hex)")
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
			return fmt.Errorf("typed data: %w", err)
		}
		if hash, _, err = apitypes.TypedDataAndHash(td); err != nil {
			return fmt.Errorf("typed data: %w", err)
		}
	}
	sig, err := crypto.Sign(hash, key)
	if err != nil {
		return err
	}
	sig[64] += 27
	fmt.Fprintln(stdout, hexutil.Encode(sig))
	return nil
}
