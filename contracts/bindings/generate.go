// Package bindings is the Go binding of Tollgate's contracts: TestUSDC (../TestUSDC.sol),
// its own FiatToken-like test token (6 decimals, EIP-3009 with v,r,s and bytes signatures,
// EIP-2612 permit, blacklist and pause), TestWallet (../TestWallet.sol), a minimal EIP-1271
// contract wallet owned by one EOA key, and TestWalletFactory (../TestWalletFactory.sol), which
// deploys TestWallets at CREATE2 addresses known in advance (counterfactual wallets, ERC-6492).
// It also binds ERC6492Validator (../ERC6492Validator.sol), which is not a test contract:
// settlement/eip1271 runs its creation code as a deployless eth_call to check the signatures of
// wallets that are not deployed yet.
//
// The settlement worker packs its calls to any USDC (the real one on Polygon included) with this
// binding: the functions and events it uses (transferWithAuthorization with v,r,s,
// authorizationState, balanceOf, paused, isBlacklisted, name, version, DOMAIN_SEPARATOR,
// Transfer, AuthorizationUsed) have FiatToken's exact signatures.
//
// The ABIs, the bytecode and the .go bindings are generated and committed; `make generate` (or
// `go generate ./contracts/...`) reproduces them with the pinned solc-js (tools/node) and the
// abigen of the go-ethereum version in go.mod, and `make check-generate` fails on drift.
package bindings

//go:generate node ../compile.js ../build
//go:generate go run github.com/ethereum/go-ethereum/cmd/abigen --v2 --abi ../build/TestUSDC.abi --bin ../build/TestUSDC.bin --pkg bindings --type TestUSDC --out testusdc.go
//go:generate go run github.com/ethereum/go-ethereum/cmd/abigen --v2 --abi ../build/TestWallet.abi --bin ../build/TestWallet.bin --pkg bindings --type TestWallet --out testwallet.go
//go:generate go run github.com/ethereum/go-ethereum/cmd/abigen --v2 --abi ../build/TestWalletFactory.abi --bin ../build/TestWalletFactory.bin --pkg bindings --type TestWalletFactory --out testwalletfactory.go
//go:generate go run github.com/ethereum/go-ethereum/cmd/abigen --v2 --abi ../build/ERC6492Validator.abi --bin ../build/ERC6492Validator.bin --pkg bindings --type ERC6492Validator --out erc6492validator.go
