// node20-register.mjs: lets @modelcontextprotocol/conformance run on Node 20.
//
//   node --import ./node20-register.mjs node_modules/@modelcontextprotocol/conformance/dist/index.js server --url URL
//
// The conformance CLI (0.2.0-alpha.12, and 0.1.16) imports globSync from
// 'fs', which Node added in 22; on Node 20 the import alone fails at link
// time, before any scenario runs. This machine and CI have Node 20, which
// the SDKs themselves support. The CLI calls globSync in one place only,
// tier-check's collection of results (**/checks.json), never on the
// `server` path this harness runs, so a stand-in that throws is enough:
// node20-hooks.mjs maps 'fs', for modules of the conformance package
// only, to node20-fs.mjs (node:fs plus that stand-in). On a Node that has
// globSync nothing is registered and the CLI runs untouched.
import fs from 'node:fs';
import { register } from 'node:module';

if (typeof fs.globSync !== 'function') register('./node20-hooks.mjs', import.meta.url);
