package settlement

import (
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tollgate-dev/tollgate/config"
)

// TestChainsFromConfig shows that a chain is configuration only: Polygon, Amoy and anvil come
// from the same code with different values.
func TestChainsFromConfig(t *testing.T) {
	cfg, err := config.Load("../config/testdata/settle_good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := ChainsFromConfig(cfg.Settle.Chains)
	if err != nil {
		t.Fatal(err)
	}
	polygon, amoy, anvil := chains[0], chains[1], chains[2]
	if polygon.ChainID().Int64() != 137 || polygon.Token != common.HexToAddress("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359") {
		t.Errorf("polygon: %+v", polygon)
	}
	if polygon.TipFloor.Cmp(big.NewInt(25_000_000_000)) != 0 || polygon.MaxFeeCap.Cmp(big.NewInt(2_000_000_000_000)) != 0 {
		t.Errorf("polygon fees: floor %s, cap %s", polygon.TipFloor, polygon.MaxFeeCap)
	}
	if polygon.Confirmations != 0 || polygon.DomainName != "USD Coin" || polygon.DomainVersion != "2" || polygon.MaxLogRange != 1000 {
		t.Errorf("polygon defaults: %+v", polygon)
	}
	if amoy.DomainName != "USDC" || amoy.MaxFeeCap != nil {
		t.Errorf("amoy: %+v", amoy)
	}
	if anvil.Confirmations != 2 || anvil.TipFloor.Cmp(big.NewInt(1_000_000)) != 0 {
		t.Errorf("anvil: confirmations %d, floor %s", anvil.Confirmations, anvil.TipFloor)
	}
	// The domain separator depends on the chain id, so a signature for one chain is no good on
	// another.
	if polygon.DomainSeparator() == NewChain(big.NewInt(80002), polygon.Token, "USD Coin").DomainSeparator() {
		t.Error("domain separators of different chains are equal")
	}
}
