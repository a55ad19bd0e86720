// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// OwnerWallet is the smallest EIP-1271 contract wallet: a signature is valid when its owner
// made it over the hash. The siwe tests deploy it on the simulated backend.
contract OwnerWallet {
    address public owner;

    constructor(address o) {
        owner = o;
    }

    function isValidSignature(bytes32 hash, bytes calldata sig) external view returns (bytes4) {
        if (sig.length != 65) {
            return 0xffffffff;
        }
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) {
            v += 27;
        }
        if (ecrecover(hash, v, r, s) == owner) {
            return 0x1626ba7e;
        }
        return 0xffffffff;
    }
}
