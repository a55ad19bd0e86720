// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title TestWallet
/// @notice A minimal EIP-1271 contract wallet, for tests only: it stands in for a deployed Safe or
/// smart account. One EOA key owns it. isValidSignature accepts the owner's 65-byte r‖s‖v ECDSA
/// signature of the hash itself (v 27/28 or 0/1) and nothing else; execute lets the owner make the
/// wallet call anything (a plain token transfer, say). setOwner lets a test make the wallet refuse
/// a signature it accepted before, as a Safe does after its owners change.
contract TestWallet {
    address public owner;

    event OwnerChanged(address indexed previousOwner, address indexed newOwner);

    constructor(address owner_) {
        owner = owner_;
        emit OwnerChanged(address(0), owner_);
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "TestWallet: caller is not the owner");
        _;
    }

    function setOwner(address newOwner) external onlyOwner {
        emit OwnerChanged(owner, newOwner);
        owner = newOwner;
    }

    /// @notice Calls `to` with `data` and `value` as this wallet; a revert is passed on as it is.
    function execute(address to, uint256 value, bytes calldata data) external onlyOwner returns (bytes memory) {
        (bool ok, bytes memory result) = to.call{value: value}(data);
        if (!ok) {
            assembly {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }

    /// @notice EIP-1271: 0x1626ba7e when the owner signed hash, 0xffffffff otherwise.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) {
            return 0xffffffff;
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) {
            v += 27;
        }
        address signer = ecrecover(hash, v, r, s);
        if (signer != address(0) && signer == owner) {
            return 0x1626ba7e;
        }
        return 0xffffffff;
    }

    receive() external payable {}
}
