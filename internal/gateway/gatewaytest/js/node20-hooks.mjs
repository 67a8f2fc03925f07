// node20-hooks.mjs: module resolution hook registered by node20-register.mjs.
// It sends the conformance package's imports of 'fs' to node20-fs.mjs and
// leaves every other import, including the SDKs', alone.
const shim = new URL('./node20-fs.mjs', import.meta.url).href;

export async function resolve(specifier, context, next) {
    if ((specifier === 'fs' || specifier === 'node:fs') && context.parentURL?.includes('/@modelcontextprotocol/conformance/')) {
        return { url: shim, shortCircuit: true };
    }
    return next(specifier, context);
}
