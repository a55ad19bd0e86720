#!/usr/bin/env node
// Compiles the contracts (TestUSDC.sol, TestWallet.sol, TestWalletFactory.sol and the
// ERC6492Validator.sol that sign-in and top-ups run as a deployless eth_call) with the solc-js
// pinned in tools/node (run `make tools` first) and writes build/NAME.abi and build/NAME.bin for
// each. Run through `go generate ./contracts/...` (or `make generate`); the outputs are
// committed, so `go test` never needs Node.
//
// Usage: node compile.js [OUTDIR]   (OUTDIR defaults to ./build next to this file)
'use strict';

const fs = require('fs');
const path = require('path');

const here = __dirname;
const solcPath = path.join(here, '..', 'tools', 'node', 'node_modules', 'solc');
let solc;
try {
  solc = require(solcPath);
} catch (e) {
  console.error(`compile.js: solc is not installed at ${solcPath}: run 'make tools'`);
  process.exit(1);
}

const wantVersion = '0.8.37';
if (!solc.version().startsWith(wantVersion + '+')) {
  console.error(`compile.js: need solc ${wantVersion}, found ${solc.version()}: run 'make tools'`);
  process.exit(1);
}

const outDir = process.argv[2] || path.join(here, 'build');
const names = ['TestUSDC', 'TestWallet', 'TestWalletFactory', 'ERC6492Validator'];
const sources = {};
const outputSelection = {};
for (const name of names) {
  sources[name + '.sol'] = { content: fs.readFileSync(path.join(here, name + '.sol'), 'utf8') };
  outputSelection[name + '.sol'] = { [name]: ['abi', 'evm.bytecode.object'] };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    // shanghai: runs on every chain we target (Polygon PoS, Amoy, anvil, the simulated backend).
    evmVersion: 'shanghai',
    optimizer: { enabled: true, runs: 200 },
    outputSelection,
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) {
  console.error(e.formattedMessage);
}
if (errors.length > 0) {
  process.exit(1);
}

fs.mkdirSync(outDir, { recursive: true });
for (const name of names) {
  const contract = output.contracts[name + '.sol'][name];
  fs.writeFileSync(path.join(outDir, name + '.abi'), JSON.stringify(contract.abi, null, 1) + '\n');
  fs.writeFileSync(path.join(outDir, name + '.bin'), contract.evm.bytecode.object + '\n');
}
