// Package settlement moves real USDC for Tollgate on any EVM chain: it relays the users'
// gasless top-ups (EIP-3009 authorizations they sign on the hosted page), credits them and
// plain transfers from linked wallets to the ledger at finality, and pays developers' payouts
// from a hot wallet with the hot wallet's own EIP-3009 authorization.
//
// Two halves:
//   - TopUps (database only, used by the HTTP API in `tollgate serve`): create an intent, take
//     its signature, report its state and the deposits seen but not yet final. Unassigned
//     (database and ledger only, `tollgate settle unassigned|assign`) lists the transfers from
//     addresses no user linked and credits one to the wallet an operator names, once.
//   - Worker (one per chain and hot wallet, `tollgate settle`): relays signed top-ups, watches
//     the token's transfers to the treasury, pays requested payouts, and keeps every
//     transaction it signs in the database before broadcasting it.
//
// Money moves in the ledger only at finality, and every credit is keyed by what makes it unique
// on chain: (chain, token, authorizer, nonce) for an authorization, (chain, tx hash, position
// of the log in its receipt) for a plain transfer. A replayed log, a resubmitted authorization,
// a reorg or a restart therefore never credits twice; the token itself makes each
// authorization single-use, so a payout cannot be paid twice either.
//
// The package owns the tables in settlement/schema. The chain is reached only through
// [ChainClient], so the same worker runs on ethclient/simulated in unit tests and on anvil or
// a real node.
package settlement
