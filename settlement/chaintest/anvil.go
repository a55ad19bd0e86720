package chaintest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
)

// Anvil is a running anvil node (foundry's local EVM node, from the npm package
// @foundry-rs/anvil-linux-amd64 installed by `make tools`).
type Anvil struct {
	URL     string
	ChainID *big.Int
	Client  *ethclient.Client
	RPC     *rpc.Client
}

// AnvilOptions tune StartAnvil.
type AnvilOptions struct {
	// BlockTime is the interval mining period in seconds (default 1). Transactions wait in the
	// pool until the next block, as on a real chain.
	BlockTime int
	// BaseFeeWei is the initial base fee (default 30 gwei, a quiet day on Polygon PoS).
	BaseFeeWei *big.Int
	// SigningAccounts is how many of anvil's own development accounts it holds, funded and
	// unlocked, so that it can act as a remote signer for them (eth_signTransaction,
	// eth_signTypedData_v4); eth_accounts lists them. Default none.
	SigningAccounts int
}

// AnvilPath finds the anvil binary: TOLLGATE_TEST_ANVIL, else tools/node/node_modules/.bin/anvil
// in the repository that contains the working directory.
func AnvilPath() (string, error) {
	if p := os.Getenv("TOLLGATE_TEST_ANVIL"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("chaintest: no go.mod above the working directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "tools", "node", "node_modules", ".bin", "anvil")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("chaintest: anvil is not installed at %s: run 'make tools' (it installs @foundry-rs/anvil-linux-amd64 from tools/node), or set TOLLGATE_TEST_ANVIL to an anvil binary", p)
	}
	return p, nil
}

// StartAnvil starts anvil on a free local port with `--slots-in-an-epoch 1`, so that its
// `finalized` block trails the head by about two blocks, and stops it when the test ends. It
// fails the test (never skips) when anvil is missing.
func StartAnvil(t testing.TB, opts AnvilOptions) *Anvil {
	t.Helper()
	path, err := AnvilPath()
	if err != nil {
		t.Fatal(err)
	}
	if opts.BlockTime <= 0 {
		opts.BlockTime = 1
	}
	if opts.BaseFeeWei == nil {
		opts.BaseFeeWei = big.NewInt(30_000_000_000)
	}
	port, err := FreePort(t.Context())
	if err != nil {
		t.Fatalf("chaintest: find a free port: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	//nolint:gosec // G204: the binary is the repository's anvil or the one TOLLGATE_TEST_ANVIL names; test support only
	cmd := exec.CommandContext(ctx, path,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--block-time", strconv.Itoa(opts.BlockTime),
		"--slots-in-an-epoch", "1",
		"--base-fee", opts.BaseFeeWei.String(),
		"--accounts", strconv.Itoa(max(opts.SigningAccounts, 0)),
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("chaintest: start %s: %v", path, err)
	}
	var logMu sync.Mutex
	var logTail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			logMu.Lock()
			logTail = append(logTail, sc.Text())
			if len(logTail) > 50 {
				logTail = logTail[1:]
			}
			logMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		<-done
		if t.Failed() {
			logMu.Lock()
			t.Logf("anvil's last output:\n%s", strings.Join(logTail, "\n"))
			logMu.Unlock()
		}
	})

	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rc, err := rpc.DialContext(ctx, url)
		if err == nil {
			client := ethclient.NewClient(rc)
			id, err := client.ChainID(ctx)
			if err == nil {
				t.Cleanup(rc.Close)
				return &Anvil{URL: url, ChainID: id, Client: client, RPC: rc}
			}
			rc.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("chaintest: anvil did not answer on %s within 30s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SetBalance gives an account native currency (for gas) with anvil_setBalance.
func (a *Anvil) SetBalance(ctx context.Context, account common.Address, wei *big.Int) error {
	return a.RPC.CallContext(ctx, nil, "anvil_setBalance", account, hexutil.EncodeBig(wei))
}

// Fund gives each account 100 of the chain's native coin, far more gas money than a test
// spends, or fails the test.
func (a *Anvil) Fund(t testing.TB, accounts ...common.Address) {
	t.Helper()
	for _, account := range accounts {
		if err := a.SetBalance(t.Context(), account, new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18))); err != nil {
			t.Fatalf("chaintest: fund %s: %v", account.Hex(), err)
		}
	}
}

// SigningAccount is the one development account anvil holds (started with SigningAccounts:
// 1), for tests that use anvil as a remote signer.
func (a *Anvil) SigningAccount(t testing.TB) common.Address {
	t.Helper()
	var accounts []common.Address
	if err := a.RPC.CallContext(t.Context(), &accounts, "eth_accounts"); err != nil || len(accounts) != 1 {
		t.Fatalf("chaintest: anvil's accounts: %v, %v; want the one it was started with", accounts, err)
	}
	return accounts[0]
}

// FreePort finds a free loopback port for a child process to listen on. It looks below the
// kernel's ephemeral range: a port from inside it (what listening on port 0 gives) can be taken,
// between this check and the child's bind, by any outgoing connection on the machine — other test
// packages run beside this one — and the child then fails to start.
func FreePort(ctx context.Context) (int, error) {
	low := 20000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if eph, err := strconv.Atoi(f[0]); err == nil && eph > 12000 {
				low = eph
			}
		}
	}
	start := low - 10000
	var lc net.ListenConfig
	for range 100 {
		port := start + rand.IntN(low-start) //nolint:gosec // spreads test ports; nothing secret
		l, err := lc.Listen(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken
		}
		_ = l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("chaintest: no free port in %d–%d after 100 tries", start, low-1)
}

// FactoryChain is an anvil node with a TestWalletFactory deployed, and a key with native
// currency that tests send their transactions from.
type FactoryChain struct {
	*Anvil
	Send    Sender
	Funded  *ecdsa.PrivateKey
	Factory common.Address
}

// StartAnvilWithFactory starts anvil (as StartAnvil), funds a new key and deploys a
// TestWalletFactory from it, for tests of counterfactual wallets (ERC-6492).
func StartAnvilWithFactory(t testing.TB, opts AnvilOptions) FactoryChain {
	t.Helper()
	node := StartAnvil(t, opts)
	c := FactoryChain{Anvil: node, Send: Sender{Client: node.Client, TipFloor: big.NewInt(25_000_000_000)}, Funded: Key(t)}
	node.Fund(t, crypto.PubkeyToAddress(c.Funded.PublicKey))
	var err error
	if c.Factory, err = c.Send.DeployTestWalletFactory(t.Context(), c.Funded); err != nil {
		t.Fatal(err)
	}
	return c
}

// Key makes a new secp256k1 key, or fails the test.
func Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
