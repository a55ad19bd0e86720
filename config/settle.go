package config

// Settle configures `tollgate settle`, the settlement worker, and the chains it watches.
type Settle struct {
	Chains []Chain `yaml:"chains"`
}

// Chain is one EVM chain. Adding a chain is configuration only.
type Chain struct {
	ID     string `yaml:"id"` // chain id, e.g. "137"
	Name   string `yaml:"name"`
	RPCURL string `yaml:"rpc_url" secret:"true"`
	USDC   string `yaml:"usdc"` // token address
}

func defaultSettle() Settle { return Settle{} }

func (s Settle) problems() []error { return nil }
