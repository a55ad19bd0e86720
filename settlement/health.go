package settlement

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"
)

// Health is one worker's state as the admin port's /healthz reports it.
type Health struct {
	Chain   string // the chain's name
	ChainID string
	// Healthy is false when the worker cannot do its job: it lost its lease (another worker
	// took over, or it could not renew it for longer than the lease lasts), or the chain's node
	// has not answered for longer than the RPC threshold. Problems says why.
	Healthy  bool
	Problems []string
	// Lease is "active" (this worker holds the hot wallet's lease), "standby" (another worker
	// holds it and this one never did), "lost" (this worker held it and does no longer) or
	// "starting" (not tried yet).
	Lease string
}

// Lease states in Health.
const (
	leaseStarting = "starting"
	leaseActive   = "active"
	leaseStandby  = "standby"
	leaseLost     = "lost"
)

// healthState is what Tick and the chain client decorator learn, read by Health from another
// goroutine.
type healthState struct {
	mu             sync.Mutex
	lease          string
	lastLeaseCheck time.Time // when the lease row last answered (held or not)
	leaseErr       error     // the last failed lease check, if the last one failed
	rpcFailingFrom time.Time // the first failed node call since the last answered one; zero while answering
	rpcErr         error
}

func (h *healthState) leaseChecked(now time.Time, held bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastLeaseCheck, h.leaseErr = now, nil
	switch {
	case held:
		h.lease = leaseActive
	case h.lease == leaseActive || h.lease == leaseLost:
		h.lease = leaseLost
	default:
		h.lease = leaseStandby
	}
}

// leaseFailed records a lease check that did not answer (database trouble). A worker that
// cannot renew for a whole TTL has lost its lease: another may hold it now, and fence()
// refuses this one's sends.
func (h *healthState) leaseFailed(now time.Time, ttl time.Duration, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leaseErr = err
	if h.lease == leaseActive && now.Sub(h.lastLeaseCheck) >= ttl {
		h.lease = leaseLost
	}
}

// leaseFenced records that a write found the lease taken by another worker.
func (h *healthState) leaseFenced() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lease == leaseActive {
		h.lease = leaseLost
	}
}

func (h *healthState) rpcResult(now time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.rpcFailingFrom, h.rpcErr = time.Time{}, nil
		return
	}
	if h.rpcFailingFrom.IsZero() {
		h.rpcFailingFrom = now
	}
	h.rpcErr = err
}

func (h *healthState) held() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease == leaseActive
}

// Health reports whether this worker can do its job, and why not.
func (w *Worker) Health() Health {
	now := w.clock.Now()
	h := &w.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Health{Chain: w.chain.Name, ChainID: w.chain.ID, Lease: h.lease}
	if h.lease == leaseLost {
		out.Problems = append(out.Problems, "the hot wallet's lease was lost: another worker took over, or it could not be renewed within lease_ttl")
	}
	if h.leaseErr != nil && now.Sub(h.lastLeaseCheck) >= w.cfg.LeaseTTL {
		out.Problems = append(out.Problems, fmt.Sprintf("the lease could not be checked for %s: %v", now.Sub(h.lastLeaseCheck).Round(time.Second), h.leaseErr))
	}
	if !h.rpcFailingFrom.IsZero() && now.Sub(h.rpcFailingFrom) >= w.cfg.RPCUnhealthyAfter {
		out.Problems = append(out.Problems, fmt.Sprintf("the chain's node has not answered for %s (rpc_unhealthy_after %s): %v",
			now.Sub(h.rpcFailingFrom).Round(time.Second), w.cfg.RPCUnhealthyAfter, h.rpcErr))
	}
	out.Healthy = len(out.Problems) == 0
	return out
}

// observedClient is the chain client seen through the worker's health and metrics: each call
// is counted by method and result, and a call the node did not answer starts (or continues)
// the RPC failure that /healthz reports once it lasts rpc_unhealthy_after.
type observedClient struct {
	ChainClient
	w *Worker
}

// observe records a call's result. An answer from the node — a result, "not found", or a
// JSON-RPC error such as a revert — shows the node is there; only transport trouble (no
// connection, HTTP errors, timeouts) and rate limiting count as failures. A call cut short by
// the worker's own context says nothing about the node.
func (c observedClient) observe(ctx context.Context, method string, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	failed := err != nil && !nodeAnswered(err)
	c.w.metrics.rpc(method, !failed)
	if failed {
		c.w.health.rpcResult(c.w.clock.Now(), err)
	} else {
		c.w.health.rpcResult(c.w.clock.Now(), nil)
	}
}

// rateLimitedCode is the JSON-RPC error code providers use for "limit exceeded" (EIP-1474).
const rateLimitedCode = -32005

// nodeAnswered reports whether err is the node's answer rather than a failure to reach it.
func nodeAnswered(err error) bool {
	if errors.Is(err, ethereum.NotFound) {
		return true
	}
	var re rpc.Error
	if errors.As(err, &re) {
		return re.ErrorCode() != rateLimitedCode
	}
	return false
}

func (c observedClient) ChainID(ctx context.Context) (*big.Int, error) {
	v, err := c.ChainClient.ChainID(ctx)
	c.observe(ctx, "eth_chainId", err)
	return v, err
}

func (c observedClient) HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error) {
	v, err := c.ChainClient.HeaderByNumber(ctx, number)
	c.observe(ctx, "eth_getBlockByNumber", err)
	return v, err
}

func (c observedClient) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	v, err := c.ChainClient.FilterLogs(ctx, q)
	c.observe(ctx, "eth_getLogs", err)
	return v, err
}

func (c observedClient) TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error) {
	v, err := c.ChainClient.TransactionReceipt(ctx, hash)
	c.observe(ctx, "eth_getTransactionReceipt", err)
	return v, err
}

func (c observedClient) CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error) {
	v, err := c.ChainClient.CallContract(ctx, msg, block)
	c.observe(ctx, "eth_call", err)
	return v, err
}

func (c observedClient) EstimateGas(ctx context.Context, msg ethereum.CallMsg) (uint64, error) {
	v, err := c.ChainClient.EstimateGas(ctx, msg)
	c.observe(ctx, "eth_estimateGas", err)
	return v, err
}

func (c observedClient) SuggestGasTipCap(ctx context.Context) (*big.Int, error) {
	v, err := c.ChainClient.SuggestGasTipCap(ctx)
	c.observe(ctx, "eth_maxPriorityFeePerGas", err)
	return v, err
}

func (c observedClient) NonceAt(ctx context.Context, account common.Address, block *big.Int) (uint64, error) {
	v, err := c.ChainClient.NonceAt(ctx, account, block)
	c.observe(ctx, "eth_getTransactionCount", err)
	return v, err
}

func (c observedClient) PendingNonceAt(ctx context.Context, account common.Address) (uint64, error) {
	v, err := c.ChainClient.PendingNonceAt(ctx, account)
	c.observe(ctx, "eth_getTransactionCount", err)
	return v, err
}

func (c observedClient) BalanceAt(ctx context.Context, account common.Address, block *big.Int) (*big.Int, error) {
	v, err := c.ChainClient.BalanceAt(ctx, account, block)
	c.observe(ctx, "eth_getBalance", err)
	return v, err
}

func (c observedClient) CodeAt(ctx context.Context, account common.Address, block *big.Int) ([]byte, error) {
	v, err := c.ChainClient.CodeAt(ctx, account, block)
	c.observe(ctx, "eth_getCode", err)
	return v, err
}

func (c observedClient) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	err := c.ChainClient.SendTransaction(ctx, tx)
	c.observe(ctx, "eth_sendRawTransaction", err)
	return err
}
