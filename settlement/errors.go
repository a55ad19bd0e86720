package settlement

import "errors"

// Errors returned to callers; methods document which. Decide with errors.Is.
var (
	// ErrTopUpNotFound: no top-up has that id.
	ErrTopUpNotFound = errors.New("settlement: top-up not found")
	// ErrTopUpExpired: the top-up's authorization window closed; create a new one.
	ErrTopUpExpired = errors.New("settlement: top-up expired; start a new one")
	// ErrBadSignature: the signature is malformed or was not made by the top-up's wallet
	// (neither its ECDSA signature nor one it accepts as an EIP-1271 contract wallet).
	ErrBadSignature = errors.New("settlement: bad signature")
	// ErrContractCall: the top-up's chain could not be asked whether the contract wallet
	// signed (EIP-1271 eth_call: node unreachable or failing); retrying may succeed.
	ErrContractCall = errors.New("settlement: could not ask the contract wallet whether it signed; retry")
	// ErrBadAuthorization: a signed authorization payload is malformed.
	ErrBadAuthorization = errors.New("settlement: malformed authorization")
	// ErrAuthorizationMismatch: a well-formed signed authorization is not the one the top-up
	// asked for (another payee, amount, window, nonce or token).
	ErrAuthorizationMismatch = errors.New("settlement: authorization does not match the top-up")
	// ErrInvalidTopUp: the top-up request is malformed (wallet, amount, chain).
	ErrInvalidTopUp = errors.New("settlement: invalid top-up request")
	// ErrUnknownChain: no configured chain has that id.
	ErrUnknownChain = errors.New("settlement: unknown chain")
	// ErrDepositNotFound: no unassigned deposit has that id.
	ErrDepositNotFound = errors.New("settlement: unassigned deposit not found")
	// ErrDepositAssigned: the deposit was assigned (or is being assigned) to another wallet,
	// or the ledger credited it to another wallet already.
	ErrDepositAssigned = errors.New("settlement: deposit already assigned to another wallet")
	// ErrInvalidWallet: a wallet address is malformed.
	ErrInvalidWallet = errors.New("settlement: invalid wallet address")
	// ErrLeaseLost: another worker holds this hot wallet's lease; this one must not send.
	ErrLeaseLost = errors.New("settlement: hot wallet lease is held by another worker")
)
