package bindings_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ethereum/go-ethereum/accounts/abi/abigen"
)

// TestBindingMatchesABI regenerates the binding from the committed ABI and bytecode with the
// abigen library of the go-ethereum version in go.mod, so a hand-edited binding, or an ABI
// changed without regenerating, fails `go test` and not only `make check-generate`.
func TestBindingMatchesABI(t *testing.T) {
	for name, file := range contracts {
		abiJSON := readFile(t, "../build/"+name+".abi")
		bin := readFile(t, "../build/"+name+".bin")
		code, err := abigen.BindV2([]string{name}, []string{string(abiJSON)}, []string{string(bin)}, "bindings", map[string]string{}, map[string]string{})
		if err != nil {
			t.Fatalf("abigen %s: %v", name, err)
		}
		if got := readFile(t, file); !bytes.Equal(got, []byte(code)) {
			t.Errorf("%s differs from what abigen makes of build/%s.abi and .bin: run 'make generate' and commit", file, name)
		}
	}
}

// contracts are the compiled contracts and their binding files.
var contracts = map[string]string{
	"TestUSDC": "testusdc.go", "TestWallet": "testwallet.go", "TestWalletFactory": "testwalletfactory.go",
	"ERC6492Validator": "erc6492validator.go",
}

// TestBuildMatchesSource recompiles the contracts with the pinned solc-js and compares the result
// with the committed ABI and bytecode.
func TestBuildMatchesSource(t *testing.T) {
	if _, err := os.Stat("../../tools/node/node_modules/solc/package.json"); err != nil {
		t.Fatal("solc-js is not installed in tools/node: run 'make tools'")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not on PATH: install Node.js (20 or later) and run 'make tools'")
	}
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), node, "../compile.js", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compile.js: %v\n%s", err, msg)
	}
	for contract := range contracts {
		for _, name := range []string{contract + ".abi", contract + ".bin"} {
			if !bytes.Equal(readFile(t, filepath.Join(out, name)), readFile(t, filepath.Join("../build", name))) {
				t.Errorf("build/%s is stale: run 'make generate' and commit", name)
			}
		}
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
