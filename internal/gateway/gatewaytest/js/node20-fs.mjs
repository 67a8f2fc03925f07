// node20-fs.mjs: node:fs plus the globSync Node 20 lacks (see
// node20-register.mjs). It throws: the conformance CLI's server runs never
// call it, and a loud failure beats a half-right glob if that changes.
import fs from 'node:fs';

export * from 'node:fs';
export default fs;

export function globSync(pattern) {
    throw new Error(`fs.globSync(${JSON.stringify(pattern)}) needs Node >= 22; this harness runs on Node ${process.versions.node} (see node20-register.mjs)`);
}
