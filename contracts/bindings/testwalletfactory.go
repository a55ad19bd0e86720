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

// TestWalletFactoryMetaData contains all meta data concerning the TestWalletFactory contract.
var TestWalletFactoryMetaData = bind.MetaData{
	ABI: "[{\"anonymous\":false,\"inputs\":[{\"indexed\":true,\"internalType\":\"address\",\"name\":\"wallet\",\"type\":\"address\"},{\"indexed\":true,\"internalType\":\"address\",\"name\":\"owner\",\"type\":\"address\"},{\"indexed\":false,\"internalType\":\"bytes32\",\"name\":\"salt\",\"type\":\"bytes32\"}],\"name\":\"WalletCreated\",\"type\":\"event\"},{\"inputs\":[{\"internalType\":\"address\",\"name\":\"owner\",\"type\":\"address\"},{\"internalType\":\"bytes32\",\"name\":\"salt\",\"type\":\"bytes32\"}],\"name\":\"createAccount\",\"outputs\":[{\"internalType\":\"address\",\"name\":\"wallet\",\"type\":\"address\"}],\"stateMutability\":\"nonpayable\",\"type\":\"function\"},{\"inputs\":[{\"internalType\":\"address\",\"name\":\"owner\",\"type\":\"address\"},{\"internalType\":\"bytes32\",\"name\":\"salt\",\"type\":\"bytes32\"}],\"name\":\"getAddress\",\"outputs\":[{\"internalType\":\"address\",\"name\":\"\",\"type\":\"address\"}],\"stateMutability\":\"view\",\"type\":\"function\"}]",
	ID:  "TestWalletFactory",
	Bin: "0x6080604052348015600e575f5ffd5b506109a78061001c5f395ff3fe608060405234801561000f575f5ffd5b5060043610610034575f3560e01c80637ac4ed6414610038578063f14ddffc14610067575b5f5ffd5b61004b61004636600461026e565b61007a565b6040516001600160a01b03909116815260200160405180910390f35b61004b61007536600461026e565b61013d565b5f5f6040518060200161008c90610261565b601f1982820381018352601f9091011660408181526001600160a01b03871660208301520160408051601f19818403018152908290526100cf92916020016102d0565b60408051601f1981840301815282825280516020918201206001600160f81b0319828501523060601b6bffffffffffffffffffffffff191660218501526035840187905260558085019190915282518085039091018152607590930190915281519101209150505b92915050565b5f610148838361007a565b90505f816001600160a01b03163b11610137575f828460405161016a90610261565b6001600160a01b0390911681526020018190604051809103905ff5905080158015610197573d5f5f3e3d5ffd5b509050816001600160a01b0316816001600160a01b03161461020d5760405162461bcd60e51b815260206004820152602560248201527f5465737457616c6c6574466163746f72793a206465706c6f79656420656c7365604482015264776865726560d81b606482015260840160405180910390fd5b836001600160a01b0316826001600160a01b03167fbdbcb584581e4f688b28038d847fa0c73130b688da678029bcb98e32fec769a28560405161025291815260200190565b60405180910390a35092915050565b610685806102ed83390190565b5f5f6040838503121561027f575f5ffd5b82356001600160a01b0381168114610295575f5ffd5b946020939093013593505050565b5f81515f5b818110156102c257602081850181015186830152016102a8565b505f93019283525090919050565b5f6102e46102de83866102a3565b846102a3565b94935050505056fe6080604052348015600e575f5ffd5b50604051610685380380610685833981016040819052602b916077565b5f80546001600160a01b0319166001600160a01b03831690811782556040519091907fb532073b38c83145e3e5135377a08bf9aab55bc0fd7c1179cd4fb995d2a5159c908290a35060a2565b5f602082840312156086575f5ffd5b81516001600160a01b0381168114609b575f5ffd5b9392505050565b6105d6806100af5f395ff3fe608060405260043610610041575f3560e01c806313af40351461004c5780631626ba7e1461006d5780638da5cb5b146100aa578063b61d27f6146100e0575f5ffd5b3661004857005b5f5ffd5b348015610057575f5ffd5b5061006b610066366004610389565b61010c565b005b348015610078575f5ffd5b5061008c6100873660046103e7565b610197565b6040516001600160e01b031990911681526020015b60405180910390f35b3480156100b5575f5ffd5b505f546100c8906001600160a01b031681565b6040516001600160a01b0390911681526020016100a1565b3480156100eb575f5ffd5b506100ff6100fa36600461042f565b6102ca565b6040516100a19190610485565b5f546001600160a01b0316331461013e5760405162461bcd60e51b8152600401610135906104d0565b60405180910390fd5b5f80546040516001600160a01b03808516939216917fb532073b38c83145e3e5135377a08bf9aab55bc0fd7c1179cd4fb995d2a5159c91a35f80546001600160a01b0319166001600160a01b0392909216919091179055565b5f604182146101af57506001600160e01b03196102c3565b5f6101bd6020828587610513565b6101c69161053a565b90505f6101d7604060208688610513565b6101e09161053a565b90505f858560408181106101f6576101f6610558565b919091013560f81c915050601b81101561021857610215601b8261056c565b90505b604080515f808252602082018084528a905260ff841692820192909252606081018590526080810184905260019060a0016020604051602081039080840390855afa158015610269573d5f5f3e3d5ffd5b5050604051601f1901519150506001600160a01b0381161580159061029a57505f546001600160a01b038281169116145b156102b35750630b135d3f60e11b93506102c392505050565b506001600160e01b031993505050505b9392505050565b5f546060906001600160a01b031633146102f65760405162461bcd60e51b8152600401610135906104d0565b5f5f866001600160a01b0316868686604051610313929190610591565b5f6040518083038185875af1925050503d805f811461034d576040519150601f19603f3d011682016040523d82523d5f602084013e610352565b606091505b50915091508161036457805160208201fd5b9695505050505050565b80356001600160a01b0381168114610384575f5ffd5b919050565b5f60208284031215610399575f5ffd5b6102c38261036e565b5f5f83601f8401126103b2575f5ffd5b50813567ffffffffffffffff8111156103c9575f5ffd5b6020830191508360208285010111156103e0575f5ffd5b9250929050565b5f5f5f604084860312156103f9575f5ffd5b83359250602084013567ffffffffffffffff811115610416575f5ffd5b610422868287016103a2565b9497909650939450505050565b5f5f5f5f60608587031215610442575f5ffd5b61044b8561036e565b935060208501359250604085013567ffffffffffffffff81111561046d575f5ffd5b610479878288016103a2565b95989497509550505050565b602081525f82518060208401525f5b818110156104b15760208186018101516040868401015201610494565b505f604082850101526040601f19601f83011684010191505092915050565b60208082526023908201527f5465737457616c6c65743a2063616c6c6572206973206e6f7420746865206f776040820152623732b960e91b606082015260800190565b5f5f85851115610521575f5ffd5b8386111561052d575f5ffd5b5050820193919092039150565b80356020831015610552575f19602084900360031b1b165b92915050565b634e487b7160e01b5f52603260045260245ffd5b60ff818116838216019081111561055257634e487b7160e01b5f52601160045260245ffd5b818382375f910190815291905056fea264697066735822122073084c9570372af979a6a33699920cb443c1bb19a32a661fd1ebe7c1c518c74964736f6c63430008250033a26469706673582212200576d475eeaceb36f0f6d2c4124f680625ec78240eac2c94d273d58e613896f464736f6c63430008250033",
}

// TestWalletFactory is an auto generated Go binding around an Ethereum contract.
type TestWalletFactory struct {
	abi abi.ABI
}

// GetABI returns the ABI associated with this contract binding.
func (c *TestWalletFactory) GetABI() abi.ABI {
	return c.abi
}

// NewTestWalletFactory creates a new instance of TestWalletFactory.
func NewTestWalletFactory() *TestWalletFactory {
	parsed, err := TestWalletFactoryMetaData.ParseABI()
	if err != nil {
		panic(errors.New("invalid ABI: " + err.Error()))
	}
	return &TestWalletFactory{abi: *parsed}
}

// Instance creates a wrapper for a deployed contract instance at the given address.
// Use this to create the instance object passed to abigen v2 library functions Call, Transact, etc.
func (c *TestWalletFactory) Instance(backend bind.ContractBackend, addr common.Address) *bind.BoundContract {
	return bind.NewBoundContract(addr, c.abi, backend, backend, backend)
}

// PackCreateAccount is the Go binding used to pack the parameters required for calling
// the contract method with ID 0xf14ddffc.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function createAccount(address owner, bytes32 salt) returns(address wallet)
func (testWalletFactory *TestWalletFactory) PackCreateAccount(owner common.Address, salt [32]byte) []byte {
	enc, err := testWalletFactory.abi.Pack("createAccount", owner, salt)
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackCreateAccount is the Go binding used to pack the parameters required for calling
// the contract method with ID 0xf14ddffc.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function createAccount(address owner, bytes32 salt) returns(address wallet)
func (testWalletFactory *TestWalletFactory) TryPackCreateAccount(owner common.Address, salt [32]byte) ([]byte, error) {
	return testWalletFactory.abi.Pack("createAccount", owner, salt)
}

// UnpackCreateAccount is the Go binding that unpacks the parameters returned
// from invoking the contract method with ID 0xf14ddffc.
//
// Solidity: function createAccount(address owner, bytes32 salt) returns(address wallet)
func (testWalletFactory *TestWalletFactory) UnpackCreateAccount(data []byte) (common.Address, error) {
	out, err := testWalletFactory.abi.Unpack("createAccount", data)
	if err != nil {
		return *new(common.Address), err
	}
	out0 := *abi.ConvertType(out[0], new(common.Address)).(*common.Address)
	return out0, nil
}

// PackGetAddress is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x7ac4ed64.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function getAddress(address owner, bytes32 salt) view returns(address)
func (testWalletFactory *TestWalletFactory) PackGetAddress(owner common.Address, salt [32]byte) []byte {
	enc, err := testWalletFactory.abi.Pack("getAddress", owner, salt)
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackGetAddress is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x7ac4ed64.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function getAddress(address owner, bytes32 salt) view returns(address)
func (testWalletFactory *TestWalletFactory) TryPackGetAddress(owner common.Address, salt [32]byte) ([]byte, error) {
	return testWalletFactory.abi.Pack("getAddress", owner, salt)
}

// UnpackGetAddress is the Go binding that unpacks the parameters returned
// from invoking the contract method with ID 0x7ac4ed64.
//
// Solidity: function getAddress(address owner, bytes32 salt) view returns(address)
func (testWalletFactory *TestWalletFactory) UnpackGetAddress(data []byte) (common.Address, error) {
	out, err := testWalletFactory.abi.Unpack("getAddress", data)
	if err != nil {
		return *new(common.Address), err
	}
	out0 := *abi.ConvertType(out[0], new(common.Address)).(*common.Address)
	return out0, nil
}

// TestWalletFactoryWalletCreated represents a WalletCreated event raised by the TestWalletFactory contract.
type TestWalletFactoryWalletCreated struct {
	Wallet common.Address
	Owner  common.Address
	Salt   [32]byte
	Raw    *types.Log // Blockchain specific contextual infos
}

const TestWalletFactoryWalletCreatedEventName = "WalletCreated"

// ContractEventName returns the user-defined event name.
func (TestWalletFactoryWalletCreated) ContractEventName() string {
	return TestWalletFactoryWalletCreatedEventName
}

// UnpackWalletCreatedEvent is the Go binding that unpacks the event data emitted
// by contract.
//
// Solidity: event WalletCreated(address indexed wallet, address indexed owner, bytes32 salt)
func (testWalletFactory *TestWalletFactory) UnpackWalletCreatedEvent(log *types.Log) (*TestWalletFactoryWalletCreated, error) {
	event := "WalletCreated"
	if len(log.Topics) == 0 {
		return nil, bind.ErrNoEventSignature
	}
	if log.Topics[0] != testWalletFactory.abi.Events[event].ID {
		return nil, bind.ErrEventSignatureMismatch
	}
	out := new(TestWalletFactoryWalletCreated)
	if len(log.Data) > 0 {
		if err := testWalletFactory.abi.UnpackIntoInterface(out, event, log.Data); err != nil {
			return nil, err
		}
	}
	var indexed abi.Arguments
	for _, arg := range testWalletFactory.abi.Events[event].Inputs {
		if arg.Indexed {
			indexed = append(indexed, arg)
		}
	}
	if err := abi.ParseTopics(out, indexed, log.Topics[1:]); err != nil {
		return nil, err
	}
	out.Raw = log
	return out, nil
}
