#!/usr/bin/env node
// client.mjs: connects to an MCP server over streamable HTTP with an official
// TypeScript SDK client and runs a script of named steps, printing one JSON
// line per step. Every wait is bounded and the process exits by itself.
//
//   node client.mjs --sdk v2|v1 --url http://127.0.0.1:PORT/mcp
//                   [--header K:V ...] [--script 'STEP; STEP; ...'] [--step STEP ...]
//                   [--negotiation auto|legacy|pin] [--elicit accept|decline]
//                   [--declare-tasks] [--trace] [--timeout-ms 10000] [--deadline-ms 60000]
//
//   --sdk v2   @modelcontextprotocol/client 2.4.0. With --negotiation auto (the
//              default here; the SDK's own default is legacy) connect() probes
//              with server/discover and falls back to initialize on a
//              2025-11-25 server. pin requires 2026-07-28.
//   --sdk v1   @modelcontextprotocol/sdk 1.32.2 (2025-11-25: initialize, sessions,
//              GET stream).
//   --trace    also print every HTTP exchange the client makes (kind "http").
//   --declare-tasks  the SDK client itself declares io.modelcontextprotocol/tasks
//              (SDK v2 cannot consume resultType "task"; shows what happens).
//
// Steps (arguments are words or JSON; steps are separated by ';'):
//   discover                    server/discover (v2 modern) or the initialize result
//   list-tools | list-prompts | list-resources
//   call TOOL [JSON-ARGS]       tools/call
//   get-prompt NAME [JSON-ARGS] prompts/get
//   read-resource URI           resources/read
//   confirm [ACTION]            tools/call confirm; elicitations are answered
//                               automatically (MRTR retry on 2026-07-28,
//                               elicitation/create response on 2025-11-25)
//   progress [N]                tools/call progress with a progress token
//   task [TEXT]                 long_job as a task, then a second (held) job cancelled.
//                               2026-07-28: the io.modelcontextprotocol/tasks
//                               extension (create, get -> input_required, update,
//                               get -> completed), sent over a second official
//                               transport since SDK v2 has no tasks API;
//                               2025-11-25: SEP-1686 (create, get, result, list)
//   listen [N] [TRIGGER]        wait for N tools/list_changed (subscriptions/listen
//                               on 2026-07-28, the GET stream on 2025-11-25);
//                               TRIGGER "add_tool" (default) calls add_tool N
//                               times, "none" waits for someone else
//   fallback                    which era and version the connection negotiated
//
// Output lines:
//   {"connected":true,"sdk":"v2","era":"modern","protocolVersion":"2026-07-28",...}
//   {"step":"call","args":[...],"ok":true,"result":{...},"ms":3}
//   {"step":"call","args":[...],"ok":false,"error":{"name":..,"code":..,"message":..,"data":..}}
//   {"done":true,"failed":N}
// or {"connected":false,"error":{...}} and exit status 1. Exit status 0 means
// the script ran (steps may still have failed); 2 is a usage error; 3 the deadline.

import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
    options: {
        sdk: { type: 'string', default: 'v2' },
        url: { type: 'string' },
        header: { type: 'string', multiple: true, default: [] },
        script: { type: 'string', default: '' },
        step: { type: 'string', multiple: true, default: [] },
        negotiation: { type: 'string', default: 'auto' },
        elicit: { type: 'string', default: 'accept' },
        'declare-tasks': { type: 'boolean', default: false },
        trace: { type: 'boolean', default: false },
        'timeout-ms': { type: 'string', default: '10000' },
        'deadline-ms': { type: 'string', default: '60000' }
    }
});

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}
function usage(msg) {
    process.stderr.write(`client.mjs: ${msg}\n`);
    process.exit(2);
}

if (!opts.url) usage('--url is required');
if (opts.sdk !== 'v1' && opts.sdk !== 'v2') usage(`--sdk must be v1 or v2, not ${opts.sdk}`);
const TIMEOUT = Number(opts['timeout-ms']);
const TASKS_EXT = 'io.modelcontextprotocol/tasks';

// The whole run is bounded: past the deadline the process exits on its own.
setTimeout(() => {
    emit({ fatal: 'deadline', ms: Number(opts['deadline-ms']) });
    process.exit(3);
}, Number(opts['deadline-ms'])).unref();

const headers = {};
for (const h of opts.header) {
    const i = h.indexOf(':');
    if (i <= 0) usage(`--header wants K:V, got ${h}`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}

// ---------------------------------------------------------------------------
// Script parsing: split on ';' outside JSON brackets and strings; words in a
// step are separated by spaces, and a word starting with { or [ runs to its
// matching bracket.

function splitTop(text, sep) {
    const out = [];
    let depth = 0;
    let quote = false;
    let cur = '';
    for (let i = 0; i < text.length; i++) {
        const c = text[i];
        if (quote) {
            if (c === '\\') {
                cur += c + (text[++i] ?? '');
                continue;
            }
            if (c === '"') quote = false;
        } else if (c === '"') quote = true;
        else if (c === '{' || c === '[') depth++;
        else if (c === '}' || c === ']') depth--;
        if (!quote && depth === 0 && (sep === ' ' ? /\s/.test(c) : c === sep)) {
            if (cur.trim()) out.push(cur.trim());
            cur = '';
            continue;
        }
        cur += c;
    }
    if (cur.trim()) out.push(cur.trim());
    return out;
}
const steps = [...splitTop(opts.script, ';'), ...opts.step].map(s => splitTop(s, ' '));
function jsonArg(word, fallback) {
    if (word === undefined) return fallback;
    try {
        return JSON.parse(word);
    } catch {
        throw new Error(`not JSON: ${word}`);
    }
}

// ---------------------------------------------------------------------------
// A fetch that records the exchanges (printed with --trace) and tells the
// listen step when a GET stream is open.

let httpSeq = 0;
let getStreamsOpen = 0;
let getStreamRefused; // the status of a GET the server refused (e.g. 405)
const getStreamWaiters = [];

function headersObject(h) {
    const out = {};
    for (const [k, v] of new Headers(h ?? {})) out[k] = v;
    return out;
}
function maybeJSON(text) {
    try {
        return JSON.parse(text);
    } catch {
        return text;
    }
}
async function tracedFetch(url, init = {}) {
    const n = ++httpSeq;
    const method = init.method ?? 'GET';
    if (opts.trace) {
        const body = typeof init.body === 'string' ? maybeJSON(init.body) : init.body ? '(stream)' : null;
        emit({ kind: 'http', dir: 'request', n, method, url: String(url), headers: headersObject(init.headers), body });
    }
    const res = await fetch(url, init);
    const type = res.headers.get('content-type') ?? '';
    if (opts.trace) emit({ kind: 'http', dir: 'response', n, status: res.status, headers: headersObject(res.headers) });
    const isGetStream = method === 'GET' && res.ok && type.startsWith('text/event-stream');
    if (isGetStream) getStreamsOpen++;
    else if (method === 'GET') getStreamRefused = res.status;
    if (method === 'GET') getStreamWaiters.splice(0).forEach(w => w());
    if (!res.body || (!opts.trace && !isGetStream)) return res;
    // Pass the body through unchanged, logging as it flows; cancelling the
    // returned stream still cancels the connection.
    const decoder = new TextDecoder();
    let buf = '';
    const logBlock = block => {
        const ev = {};
        const data = [];
        for (const line of block.split(/\r?\n/)) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const f = i < 0 ? line : line.slice(0, i);
            const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (f === 'data') data.push(v);
            else if (f) ev[f] = v;
        }
        if (data.length) ev.data = maybeJSON(data.join('\n'));
        if (Object.keys(ev).length) emit({ kind: 'http', dir: 'sse', n, ...ev });
    };
    const tap = new TransformStream({
        transform(chunk, ctl) {
            if (opts.trace) {
                buf += decoder.decode(chunk, { stream: true });
                if (type.startsWith('text/event-stream')) {
                    let m;
                    while ((m = /\r?\n\r?\n/.exec(buf))) {
                        logBlock(buf.slice(0, m.index));
                        buf = buf.slice(m.index + m[0].length);
                    }
                }
            }
            ctl.enqueue(chunk);
        },
        flush() {
            if (opts.trace && !type.startsWith('text/event-stream') && buf) emit({ kind: 'http', dir: 'body', n, body: maybeJSON(buf) });
            if (opts.trace) emit({ kind: 'http', dir: 'end', n });
            if (isGetStream) getStreamsOpen--;
        }
    });
    return new Response(res.body.pipeThrough(tap), { status: res.status, statusText: res.statusText, headers: res.headers });
}

// ---------------------------------------------------------------------------
// Helpers.

/** bounded rejects after ms, so no step can hang the script. */
function bounded(promise, ms, what) {
    let timer;
    return Promise.race([
        promise.finally(() => clearTimeout(timer)),
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(Object.assign(new Error(`timeout after ${ms}ms: ${what}`), { code: 'HARNESS_TIMEOUT' })), ms);
        })
    ]);
}
/** waitFor resolves when cond() holds, re-checked whenever poke() is called. */
function waiter() {
    const waiters = [];
    return {
        poke: () => waiters.splice(0).forEach(w => w()),
        until: (cond, ms, what) =>
            bounded(
                new Promise(resolve => {
                    const check = () => (cond() ? resolve() : waiters.push(check));
                    check();
                }),
                ms,
                what
            )
    };
}
function errorJSON(err) {
    const out = { name: err?.name ?? 'Error', message: String(err?.message ?? err) };
    if (err?.code !== undefined) out.code = err.code;
    if (err?.data !== undefined) out.data = err.data;
    return out;
}
/** answerElicitation fills a form from its schema (booleans true, strings "yes"). */
function answerElicitation(params) {
    if (opts.elicit !== 'accept') return { action: opts.elicit };
    const content = {};
    for (const [k, s] of Object.entries(params?.requestedSchema?.properties ?? {})) {
        content[k] = s.type === 'boolean' ? true : s.type === 'number' || s.type === 'integer' ? 1 : 'yes';
    }
    return { action: 'accept', content };
}
const elicitations = [];

// ---------------------------------------------------------------------------
// Connecting.

async function connectV2() {
    const { Client, StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
    const capabilities = { elicitation: { form: {} } };
    if (opts['declare-tasks']) capabilities.extensions = { [TASKS_EXT]: {} };
    const mode = opts.negotiation === 'pin' ? { pin: '2026-07-28' } : opts.negotiation;
    const client = new Client({ name: 'bulkhead-js-client', version: '2.4.0' }, { capabilities, versionNegotiation: { mode } });
    client.setRequestHandler('elicitation/create', async req => {
        elicitations.push(req.params);
        return answerElicitation(req.params);
    });
    const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers }, fetch: tracedFetch });
    await client.connect(transport, { timeout: TIMEOUT });
    const era = client.getProtocolEra();
    return {
        client,
        transport,
        era,
        protocolVersion: client.getNegotiatedProtocolVersion(),
        serverInfo: client.getServerVersion(),
        capabilities: client.getServerCapabilities(),
        newRawTransport: () =>
            new StreamableHTTPClientTransport(new URL(opts.url), {
                requestInit: { headers },
                fetch: tracedFetch,
                // A legacy connection's session and version ride along.
                sessionId: era === 'legacy' ? transport.sessionId : undefined,
                protocolVersion: era === 'legacy' ? client.getNegotiatedProtocolVersion() : undefined
            }),
        onToolsChanged: fn => client.setNotificationHandler('notifications/tools/list_changed', fn)
    };
}

async function connectV1() {
    const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
    const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
    const { ElicitRequestSchema, ToolListChangedNotificationSchema } = await import('@modelcontextprotocol/sdk/types.js');
    const client = new Client({ name: 'bulkhead-js-client', version: '1.32.2' }, { capabilities: { elicitation: { form: {} } } });
    client.setRequestHandler(ElicitRequestSchema, async req => {
        elicitations.push(req.params);
        return answerElicitation(req.params);
    });
    const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers }, fetch: tracedFetch });
    await client.connect(transport, { timeout: TIMEOUT });
    return {
        client,
        transport,
        era: 'legacy',
        protocolVersion: transport.protocolVersion,
        serverInfo: client.getServerVersion(),
        capabilities: client.getServerCapabilities(),
        onToolsChanged: fn => client.setNotificationHandler(ToolListChangedNotificationSchema, fn)
    };
}

/**
 * rawChannel speaks JSON-RPC over a second official transport, for
 * protocol features the SDK client has no API for (tasks). The transport
 * still derives MCP-Protocol-Version, Mcp-Method and Mcp-Name from the body.
 */
async function rawChannel(conn) {
    const t = conn.newRawTransport();
    const pending = new Map();
    let nextId = 1;
    t.onmessage = msg => {
        const p = pending.get(msg.id);
        if (p && ('result' in msg || 'error' in msg)) {
            pending.delete(msg.id);
            p(msg);
        }
    };
    t.onerror = () => {};
    await t.start();
    return {
        request: (method, params) => {
            const id = `raw-${nextId++}`;
            const reply = new Promise(resolve => pending.set(id, resolve));
            return bounded(
                t.send({ jsonrpc: '2.0', id, method, params }).then(() => reply),
                TIMEOUT,
                method
            );
        },
        close: () => t.close()
    };
}
function envelope(conn, extraCaps) {
    return {
        'io.modelcontextprotocol/protocolVersion': conn.protocolVersion,
        'io.modelcontextprotocol/clientInfo': { name: 'bulkhead-js-client', version: '2.4.0' },
        'io.modelcontextprotocol/clientCapabilities': { elicitation: { form: {} }, ...extraCaps }
    };
}
/** unwrap returns a JSON-RPC result or throws its error. */
function unwrap(msg) {
    if (msg.error) throw Object.assign(new Error(msg.error.message), { code: msg.error.code, data: msg.error.data });
    return msg.result;
}

// ---------------------------------------------------------------------------
// Steps.

async function taskStep(conn, text) {
    const c = conn.client;
    if (opts.sdk === 'v1') {
        // SEP-1686 through the SDK's experimental tasks API.
        const { CallToolResultSchema } = await import('@modelcontextprotocol/sdk/types.js');
        const { CreateTaskResultSchema } = await import('@modelcontextprotocol/sdk/experimental/tasks/types.js');
        const messages = [];
        for await (const m of c.experimental.tasks.callToolStream({ name: 'long_job', arguments: { text } }, CallToolResultSchema, {
            task: { ttl: 60000 },
            timeout: TIMEOUT
        })) {
            messages.push(m.type === 'error' ? { type: 'error', error: errorJSON(m.error) } : m);
        }
        const created = messages.find(m => m.type === 'taskCreated')?.task;
        const got = created ? await c.experimental.tasks.getTask(created.taskId, { timeout: TIMEOUT }) : undefined;
        const payload = created
            ? await c.experimental.tasks.getTaskResult(created.taskId, CallToolResultSchema, { timeout: TIMEOUT })
            : undefined;
        const list = await c.experimental.tasks.listTasks(undefined, { timeout: TIMEOUT });
        const held = await c.request(
            { method: 'tools/call', params: { name: 'long_job', arguments: { text: `${text}-held`, mode: 'hold' }, task: { ttl: 60000 } } },
            CreateTaskResultSchema,
            { timeout: TIMEOUT }
        );
        const cancel = await c.experimental.tasks.cancelTask(held.task.taskId, { timeout: TIMEOUT });
        const after = await c.experimental.tasks.getTask(held.task.taskId, { timeout: TIMEOUT });
        return { flavor: 'sep-1686', messages, get: got, result: payload, list, held, cancel, afterCancel: after };
    }
    if (conn.era === 'legacy') {
        // SDK v2 keeps the 2025-11-25 task vocabulary but no runtime for it:
        // SEP-1686 by hand over the session.
        const raw = await rawChannel(conn);
        try {
            const created = unwrap(await raw.request('tools/call', { name: 'long_job', arguments: { text }, task: { ttl: 60000 } }));
            if (!created.task) throw Object.assign(new Error('server answered without creating a task'), { data: created });
            const id = created.task.taskId;
            const got = unwrap(await raw.request('tasks/get', { taskId: id }));
            const payload = unwrap(await raw.request('tasks/result', { taskId: id }));
            const list = unwrap(await raw.request('tasks/list', {}));
            const held = unwrap(
                await raw.request('tools/call', {
                    name: 'long_job',
                    arguments: { text: `${text}-held`, mode: 'hold' },
                    task: { ttl: 60000 }
                })
            );
            const cancel = unwrap(await raw.request('tasks/cancel', { taskId: held.task.taskId }));
            const after = unwrap(await raw.request('tasks/get', { taskId: held.task.taskId }));
            return { flavor: 'sep-1686-raw', created, get: got, result: payload, list, held, cancel, afterCancel: after };
        } finally {
            await raw.close();
        }
    }
    // 2026-07-28: the io.modelcontextprotocol/tasks extension by hand, since
    // SDK v2 rejects resultType "task" (UNSUPPORTED_RESULT_TYPE).
    const raw = await rawChannel(conn);
    const meta = envelope(conn, { extensions: { [TASKS_EXT]: {} } });
    try {
        const created = unwrap(await raw.request('tools/call', { name: 'long_job', arguments: { text }, _meta: meta }));
        if (created.resultType !== 'task') throw Object.assign(new Error('server answered without creating a task'), { data: created });
        const id = created.taskId;
        const polls = [];
        let task = unwrap(await raw.request('tasks/get', { taskId: id, _meta: meta }));
        polls.push(task);
        const inputResponses = {};
        for (const [key, req] of Object.entries(task.inputRequests ?? {})) {
            elicitations.push(req.params);
            inputResponses[key] = answerElicitation(req.params);
        }
        const update = unwrap(await raw.request('tasks/update', { taskId: id, inputResponses, _meta: meta }));
        task = unwrap(await raw.request('tasks/get', { taskId: id, _meta: meta }));
        polls.push(task);
        const held = unwrap(
            await raw.request('tools/call', { name: 'long_job', arguments: { text: `${text}-held`, mode: 'hold' }, _meta: meta })
        );
        const cancel = unwrap(await raw.request('tasks/cancel', { taskId: held.taskId, _meta: meta }));
        const after = unwrap(await raw.request('tasks/get', { taskId: held.taskId, _meta: meta }));
        return { flavor: 'tasks-extension-raw', created, polls, update, held, cancel, afterCancel: after };
    } finally {
        await raw.close();
    }
}

async function listenStep(conn, n, trigger) {
    const got = [];
    const w = waiter();
    conn.onToolsChanged(note => {
        got.push(note);
        w.poke();
    });
    let sub;
    if (conn.era === 'modern') {
        sub = await conn.client.listen({ toolsListChanged: true }, { timeout: TIMEOUT });
    } else {
        // 2025-11-25: list_changed arrives on the GET stream the transport
        // opens after initialization; wait until it is up (or refused).
        const settled = () => getStreamsOpen > 0 || getStreamRefused !== undefined;
        await bounded(new Promise(resolve => (settled() ? resolve() : getStreamWaiters.push(resolve))), TIMEOUT, 'GET stream');
        if (getStreamsOpen === 0) {
            throw Object.assign(new Error(`server refused the GET stream with HTTP ${getStreamRefused}`), { code: 'GET_STREAM_REFUSED' });
        }
    }
    const added = [];
    for (let i = 0; trigger === 'add_tool' && i < n; i++) {
        const name = `t${process.pid}_${Date.now()}_${i}`;
        await conn.client.callTool({ name: 'add_tool', arguments: { name } }, undefined, { timeout: TIMEOUT });
        added.push(`dyn_${name}`);
    }
    let waitError;
    try {
        await w.until(() => got.length >= n, TIMEOUT, `${n} tools/list_changed`);
    } catch (err) {
        waitError = errorJSON(err);
    }
    let closed;
    if (sub) {
        await sub.close();
        closed = await bounded(sub.closed, TIMEOUT, 'subscription close');
    }
    const out = { via: sub ? 'subscriptions/listen' : 'GET stream', added, notifications: got, honoredFilter: sub?.honoredFilter, closed };
    if (waitError) throw Object.assign(new Error(waitError.message), { code: waitError.code, data: out });
    return out;
}

async function runStep(conn, [name, ...args]) {
    const c = conn.client;
    const ro = { timeout: TIMEOUT };
    switch (name) {
        case 'discover':
            if (conn.era === 'modern') return c.discover(ro);
            return {
                via: 'initialize',
                protocolVersion: conn.protocolVersion,
                serverInfo: conn.serverInfo,
                capabilities: conn.capabilities
            };
        case 'list-tools': {
            const r = await c.listTools(undefined, opts.sdk === 'v2' ? { ...ro, cacheMode: 'refresh' } : ro);
            return { names: r.tools.map(t => t.name), ...r };
        }
        case 'list-prompts': {
            const r = await c.listPrompts(undefined, opts.sdk === 'v2' ? { ...ro, cacheMode: 'refresh' } : ro);
            return { names: r.prompts.map(p => p.name), ...r };
        }
        case 'list-resources': {
            const r = await c.listResources(undefined, opts.sdk === 'v2' ? { ...ro, cacheMode: 'refresh' } : ro);
            return { uris: r.resources.map(x => x.uri), ...r };
        }
        case 'call':
            if (!args[0]) throw new Error('call needs a tool name');
            return c.callTool({ name: args[0], arguments: jsonArg(args[1], {}) }, ...(opts.sdk === 'v1' ? [undefined, ro] : [ro]));
        case 'get-prompt':
            return c.getPrompt({ name: args[0], arguments: jsonArg(args[1], {}) }, ro);
        case 'read-resource':
            return c.readResource({ uri: args[0] }, opts.sdk === 'v2' ? { ...ro, cacheMode: 'refresh' } : ro);
        case 'confirm': {
            const before = elicitations.length;
            const result = await c.callTool(
                { name: 'confirm', arguments: { action: args[0] ?? 'deploy' } },
                ...(opts.sdk === 'v1' ? [undefined, ro] : [ro])
            );
            return { elicitations: elicitations.slice(before), result };
        }
        case 'progress': {
            const steps = Number(args[0] ?? 3);
            const progress = [];
            const o = { ...ro, onprogress: p => progress.push(p) };
            const result = await c.callTool({ name: 'progress', arguments: { steps } }, ...(opts.sdk === 'v1' ? [undefined, o] : [o]));
            return { progress, result };
        }
        case 'task':
            return taskStep(conn, args[0] ?? 'job');
        case 'listen':
            return listenStep(conn, Number(args[0] ?? 1), args[1] ?? 'add_tool');
        case 'fallback':
            return {
                sdk: opts.sdk,
                era: conn.era,
                protocolVersion: conn.protocolVersion,
                sessionId: conn.transport.sessionId ?? null,
                discovered: opts.sdk === 'v2' ? c.getDiscoverResult() !== undefined : false
            };
        default:
            throw new Error(`unknown step ${name}`);
    }
}

// ---------------------------------------------------------------------------

let conn;
try {
    conn = await bounded(opts.sdk === 'v2' ? connectV2() : connectV1(), TIMEOUT, 'connect');
} catch (err) {
    emit({ connected: false, error: errorJSON(err) });
    process.exit(1);
}
emit({
    connected: true,
    sdk: opts.sdk,
    era: conn.era,
    protocolVersion: conn.protocolVersion,
    sessionId: conn.transport.sessionId ?? null,
    serverInfo: conn.serverInfo ?? null
});

let failed = 0;
for (const step of steps) {
    const start = Date.now();
    const line = { step: step[0], args: step.slice(1) };
    try {
        const result = await bounded(runStep(conn, step), TIMEOUT * 3, step[0]);
        emit({ ...line, ok: true, result, ms: Date.now() - start });
    } catch (err) {
        failed++;
        emit({ ...line, ok: false, error: errorJSON(err), ms: Date.now() - start });
    }
}
emit({ done: true, failed });
await bounded(conn.client.close(), TIMEOUT, 'close').catch(() => {});
process.exit(0);
