// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title ERC6492Validator
/// @notice Checks a signature of a smart account that may not be deployed yet (ERC-6492), in one
/// read-only eth_call. It is never deployed: the caller sends its creation code and constructor
/// arguments as the data of an eth_call without `to` ("deployless"), the constructor does the
/// work, and what it returns — one word — is the eth_call's result instead of runtime code:
///   1  the wallet accepts the signature (EIP-1271 isValidSignature answered 0x1626ba7e);
///   0  it does not (another answer, a revert, or less than a word);
///   2  the wallet had no code and the factory call reverted (or ran out of deployGas);
///   3  the wallet had no code and the factory call returned, but still no code is there.
/// Nothing is written to the chain: the deployment and the question happen only inside the
/// simulated call, in that order, so the wallet answers as it will once really deployed.
///
/// As ERC-6492 asks, a wallet that already has code is asked directly with the unwrapped
/// signature, and the factory is not called.
contract ERC6492Validator {
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;

    uint256 private constant INVALID = 0;
    uint256 private constant VALID = 1;
    uint256 private constant FACTORY_FAILED = 2;
    uint256 private constant NOT_DEPLOYED = 3;

    /// @param wallet the account that claims the signature
    /// @param hash what was signed (an EIP-191 or EIP-712 digest)
    /// @param factory the ERC-6492 wrapper's factory
    /// @param factoryCalldata the wrapper's call to the factory, which should deploy wallet
    /// @param signature the wrapper's inner signature, as the deployed wallet checks it
    /// @param deployGas the most gas the factory call may use; a deployment that needs more
    ///        fails here (answer 2), so a wrapper cannot make a relayer pay for a heavy one
    constructor(
        address wallet,
        bytes32 hash,
        address factory,
        bytes memory factoryCalldata,
        bytes memory signature,
        uint256 deployGas
    ) {
        uint256 answer = _check(wallet, hash, factory, factoryCalldata, signature, deployGas);
        assembly {
            mstore(0, answer)
            return(0, 32)
        }
    }

    function _check(
        address wallet,
        bytes32 hash,
        address factory,
        bytes memory factoryCalldata,
        bytes memory signature,
        uint256 deployGas
    ) private returns (uint256) {
        if (wallet.code.length == 0) {
            (bool called, ) = factory.call{gas: deployGas}(factoryCalldata);
            if (wallet.code.length == 0) {
                return called ? NOT_DEPLOYED : FACTORY_FAILED;
            }
            // A factory that reverted after someone else deployed the wallet is fine: the code
            // is there, and only the wallet's answer matters.
        }
        (bool ok, bytes memory out) = wallet.staticcall(abi.encodeWithSelector(ERC1271_MAGIC, hash, signature));
        if (!ok || out.length < 32) {
            return INVALID;
        }
        // As USDC's SignatureChecker reads it: the first word is the selector, zero-padded.
        return abi.decode(out, (bytes32)) == bytes32(ERC1271_MAGIC) ? VALID : INVALID;
    }
}
