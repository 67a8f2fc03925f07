// OAuth discovery against a Bulkhead gateway with the official MCP
// TypeScript SDK's own discovery functions (@modelcontextprotocol/client),
// as an MCP client runs it before it asks for a token. Driven by the Go test
// TestGatewayDiscoveryTypeScriptSDK (internal/server): it prints one JSON
// object on stdout with what each step found or the error it raised.
//
//   node discovery.mjs https://GATEWAY/mcp/NAME
//
// TLS: the gateway and the control plane present SVIDs that chain to the
// trust bundle; the test passes it in NODE_EXTRA_CA_CERTS. No client
// certificate is needed: metadata is public, and a request to the MCP
// endpoint without one is answered 401 with the challenge.

import {
    buildDiscoveryUrls,
    discoverAuthorizationServerMetadata,
    discoverOAuthProtectedResourceMetadata,
    discoverOAuthServerInfo,
    extractWWWAuthenticateParams,
    selectResourceURL
} from '@modelcontextprotocol/client';

const serverUrl = process.argv[2];
if (!serverUrl) {
    console.error('usage: node discovery.mjs MCP_SERVER_URL');
    process.exit(2);
}

// step runs f and records its value, or the error it threw.
async function step(f) {
    try {
        return { ok: true, value: await f() };
    } catch (e) {
        return { ok: false, error: { name: e?.name ?? 'Error', message: String(e?.message ?? e) } };
    }
}

const href = u => (u instanceof URL ? u.href : u);
const out = { serverUrl };

// 1. An unauthenticated MCP request: 401 and the challenge.
out.challenge = await step(async () => {
    const res = await fetch(serverUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' })
    });
    await res.text();
    const p = extractWWWAuthenticateParams(res);
    return { status: res.status, wwwAuthenticate: res.headers.get('www-authenticate'), resourceMetadataUrl: href(p.resourceMetadataUrl) };
});

// 2. Protected resource metadata from the challenge's URL, then by the
// well-known probing a client does without one (path-suffixed first).
out.prmFromChallenge = await step(() =>
    discoverOAuthProtectedResourceMetadata(serverUrl, { resourceMetadataUrl: out.challenge.value?.resourceMetadataUrl })
);
out.prmWellKnown = await step(() => discoverOAuthProtectedResourceMetadata(serverUrl));

// 3. The resource indicator the SDK would send (RFC 8707), checked against
// the server URL the way the SDK checks it.
out.resource = await step(async () => href(await selectResourceURL(serverUrl, {}, out.prmWellKnown.value)));

// 4. A path with no metadata of its own falls back to the root document,
// which still covers it.
const other = new URL('/mcp/not%20a%20server', serverUrl).href;
out.prmFallback = await step(() => discoverOAuthProtectedResourceMetadata(other));
out.resourceFallback = await step(async () => href(await selectResourceURL(other, {}, out.prmFallback.value)));

// 5. Authorization server metadata (RFC 8414), from the issuer the
// protected resource metadata names.
const issuer = out.prmWellKnown.value?.authorization_servers?.[0];
out.issuer = issuer ?? null;
out.discoveryUrls = await step(() => buildDiscoveryUrls(issuer).map(d => ({ url: d.url.href, type: d.type })));
out.asMetadata = await step(() => discoverAuthorizationServerMetadata(issuer));
out.asDocument = await step(async () => {
    const res = await fetch(new URL('/.well-known/oauth-authorization-server', issuer));
    return { status: res.status, contentType: res.headers.get('content-type'), body: await res.json() };
});

// 6. Both steps in one, as the SDK's auth() orchestration does.
out.serverInfo = await step(() => discoverOAuthServerInfo(serverUrl));

process.stdout.write(JSON.stringify(out) + '\n');
