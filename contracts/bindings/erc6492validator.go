// Code generated via abigen V2 - DO NOT EDIT.
// This file is a generated binding and any manual changes will be lost.

package bindings

import (
	"bytes"
	"errors"
	"math/big"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// Reference imports to suppress errors if they are not otherwise used.
var (
	_ = bytes.Equal
	_ = errors.New
	_ = big.NewInt
	_ = common.Big1
	_ = types.BloomLookup
	_ = abi.ConvertType
)

// ERC6492ValidatorMetaData contains all meta data concerning the ERC6492Validator contract.
var ERC6492ValidatorMetaData = bind.MetaData{
	ABI: "[{\"inputs\":[{\"internalType\":\"address\",\"name\":\"wallet\",\"type\":\"address\"},{\"internalType\":\"bytes32\",\"name\":\"hash\",\"type\":\"bytes32\"},{\"internalType\":\"address\",\"name\":\"factory\",\"type\":\"address\"},{\"internalType\":\"bytes\",\"name\":\"factoryCalldata\",\"type\":\"bytes\"},{\"internalType\":\"bytes\",\"name\":\"signature\",\"type\":\"bytes\"},{\"internalType\":\"uint256\",\"name\":\"deployGas\",\"type\":\"uint256\"}],\"stateMutability\":\"nonpayable\",\"type\":\"constructor\"}]",
	ID:  "ERC6492Validator",
	Bin: "0x608060405234801561000f575f5ffd5b506040516103ba3803806103ba83398101604081905261002e916102b6565b5f61003d878787878787610047565b9050805f5260205ff35b5f866001600160a01b03163b5f036100e0575f856001600160a01b03168386604051610073919061034e565b5f604051808303815f8787f1925050503d805f81146100ad576040519150601f19603f3d011682016040523d82523d5f602084013e6100b2565b606091505b50509050876001600160a01b03163b5f036100de57806100d35760026100d6565b60035b9150506101d5565b505b5f5f886001600160a01b0316631626ba7e60e01b8987604051602401610107929190610369565b60408051601f198184030181529181526020820180516001600160e01b03166001600160e01b0319909416939093179092529051610145919061034e565b5f60405180830381855afa9150503d805f811461017d576040519150601f19603f3d011682016040523d82523d5f602084013e610182565b606091505b5091509150811580610195575060208151105b156101a4575f925050506101d5565b8051630b135d3f60e11b906101c290830160209081019084016103a2565b146101cd575f6101d0565b60015b925050505b9695505050505050565b80516001600160a01b03811681146101f5575f5ffd5b919050565b634e487b7160e01b5f52604160045260245ffd5b5f5b83811015610228578181015183820152602001610210565b50505f910152565b5f82601f83011261023f575f5ffd5b81516001600160401b03811115610258576102586101fa565b604051601f8201601f19908116603f011681016001600160401b0381118282101715610286576102866101fa565b60405281815283820160200185101561029d575f5ffd5b6102ae82602083016020870161020e565b949350505050565b5f5f5f5f5f5f60c087890312156102cb575f5ffd5b6102d4876101df565b602088015190965094506102ea604088016101df565b60608801519094506001600160401b03811115610305575f5ffd5b61031189828a01610230565b608089015190945090506001600160401b0381111561032e575f5ffd5b61033a89828a01610230565b92505060a087015190509295509295509295565b5f825161035f81846020870161020e565b9190910192915050565b828152604060208201525f825180604084015261038d81606085016020870161020e565b601f01601f1916919091016060019392505050565b5f602082840312156103b2575f5ffd5b505191905056fe",
}

// ERC6492Validator is an auto generated Go binding around an Ethereum contract.
type ERC6492Validator struct {
	abi abi.ABI
}

// GetABI returns the ABI associated with this contract binding.
func (c *ERC6492Validator) GetABI() abi.ABI {
	return c.abi
}

// NewERC6492Validator creates a new instance of ERC6492Validator.
func NewERC6492Validator() *ERC6492Validator {
	parsed, err := ERC6492ValidatorMetaData.ParseABI()
	if err != nil {
		panic(errors.New("invalid ABI: " + err.Error()))
	}
	return &ERC6492Validator{abi: *parsed}
}

// Instance creates a wrapper for a deployed contract instance at the given address.
// Use this to create the instance object passed to abigen v2 library functions Call, Transact, etc.
func (c *ERC6492Validator) Instance(backend bind.ContractBackend, addr common.Address) *bind.BoundContract {
	return bind.NewBoundContract(addr, c.abi, backend, backend, backend)
}

// PackConstructor is the Go binding used to pack the parameters required for
// contract deployment.
//
// Solidity: constructor(address wallet, bytes32 hash, address factory, bytes factoryCalldata, bytes signature, uint256 deployGas) returns()
func (eRC6492Validator *ERC6492Validator) PackConstructor(wallet common.Address, hash [32]byte, factory common.Address, factoryCalldata []byte, signature []byte, deployGas *big.Int) []byte {
	enc, err := eRC6492Validator.abi.Pack("", wallet, hash, factory, factoryCalldata, signature, deployGas)
	if err != nil {
		panic(err)
	}
	return enc
}
