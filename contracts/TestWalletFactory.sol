// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import "./TestWallet.sol";

/// @title TestWalletFactory
/// @notice Deploys TestWallets at addresses known before deployment (CREATE2 of owner and salt),
/// for tests only: it stands in for a smart-account factory (Coinbase Smart Wallet's, say), so a
/// wallet can hold USDC and sign (ERC-6492) before it has code. createAccount is what an
/// ERC-6492 wrapper's factory calldata calls.
contract TestWalletFactory {
    event WalletCreated(address indexed wallet, address indexed owner, bytes32 salt);

    /// @notice Deploys the wallet of (owner, salt), or returns it if it exists already, so that
    /// calling it twice is harmless.
    function createAccount(address owner, bytes32 salt) external returns (address wallet) {
        wallet = getAddress(owner, salt);
        if (wallet.code.length > 0) {
            return wallet;
        }
        TestWallet created = new TestWallet{salt: salt}(owner);
        require(address(created) == wallet, "TestWalletFactory: deployed elsewhere");
        emit WalletCreated(wallet, owner, salt);
    }

    /// @notice The address createAccount(owner, salt) deploys to (EIP-1014).
    function getAddress(address owner, bytes32 salt) public view returns (address) {
        bytes32 initCodeHash = keccak256(abi.encodePacked(type(TestWallet).creationCode, abi.encode(owner)));
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, initCodeHash)))));
    }
}
