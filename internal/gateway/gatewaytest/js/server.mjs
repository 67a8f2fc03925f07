#!/usr/bin/env node
// server.mjs: an MCP server over streamable HTTP on 127.0.0.1, built with an
// official TypeScript SDK, that records every HTTP exchange it serves.
//
//   node server.mjs --sdk v2|v1 [--port 0] [--legacy stateless|reject]
//                   [--response-mode auto|sse|json] [--exit-on-stdin-eof]
//
//   --sdk v2   @modelcontextprotocol/server 2.4.0: createMcpHandler, which
//              serves 2026-07-28 (stateless, per-request server instances)
//              and, unless --legacy reject, 2025-era traffic through its
//              stateless legacy fallback (no sessions; GET/DELETE get 405).
//   --sdk v1   @modelcontextprotocol/sdk 1.32.2: a 2025-11-25 server with
//              sessions (Mcp-Session-Id), a GET stream and SEP-1686 tasks.
//
// Output, one JSON object per line on stdout:
//   {"listening":"http://127.0.0.1:PORT/mcp"}                  first, once
//   {"kind":"request","seq":N,"method":"POST","path":"/mcp","headers":{...},"body":...}
//   {"kind":"response","seq":N,"status":200,"headers":{...}}
//   {"kind":"body","seq":N,"body":...}                         JSON/text body
//   {"kind":"sse","seq":N,"event":"message","id":"...","data":...}  one per SSE event
//   {"kind":"end","seq":N,"reason":"complete"|"client-closed"}
//   {"kind":"app","event":"...",...}                           what the tools did
//   {"kind":"error","message":"..."}                           SDK onerror reports
// Header names are lower case (Node's); bodies that parse as JSON are
// printed parsed. Diagnostics go to stderr.
//
// Features, the same on both SDKs where the protocol revision allows:
//   tools      echo {text}, region_echo {region, text} (region is an
//              x-mcp-header: Mcp-Param-Region), add {a,b}, secret_tool {}, progress {steps},
//              confirm {action} (v2: MRTR input_required + retry;
//              v1: a server-initiated elicitation/create on the POST stream),
//              long_job {text, mode} (v2: the io.modelcontextprotocol/tasks
//              extension, hand-rolled because SDK v2 has no tasks runtime;
//              v1: SEP-1686 task-augmented tools/call),
//              add_tool {name} (registers dyn_<name>; emits tools/list_changed:
//              v2 on subscriptions/listen streams, v1 on each session's GET stream)
//   prompts    greet {name}
//   resources  docs://readme, docs://secret

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as z from 'zod';

const { values: opts } = parseArgs({
    options: {
        sdk: { type: 'string', default: 'v2' },
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        legacy: { type: 'string', default: 'stateless' },
        'response-mode': { type: 'string', default: 'auto' },
        'exit-on-stdin-eof': { type: 'boolean', default: false }
    }
});

/** emit prints one JSON line on stdout (synchronous on pipes and files). */
function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

/** parseMaybeJSON returns the JSON value of text, or text itself. */
function parseMaybeJSON(text) {
    if (text === '') return null;
    try {
        return JSON.parse(text);
    } catch {
        return text;
    }
}

// ---------------------------------------------------------------------------
// Fixtures shared by both SDKs.

const README = 'Bulkhead gateway test server: docs://readme is public.';
const SECRET = 'docs://secret holds the launch codes: 0000.';
const ELICIT_SCHEMA = {
    type: 'object',
    properties: { ok: { type: 'boolean', description: 'Proceed?' } },
    required: ['ok']
};
const dynamicTools = []; // names added by add_tool, served by every instance
// region_echo's arguments: x-mcp-header asks 2026-07-28 clients to mirror
// region into an Mcp-Param-Region header (SEP-2243), which v2 servers verify.
const RegionArgs = z.object({ region: z.string().meta({ 'x-mcp-header': 'Region' }), text: z.string() });

function greet(name) {
    return {
        description: 'A greeting',
        messages: [{ role: 'user', content: { type: 'text', text: `Hello, ${name}!` } }]
    };
}

// ---------------------------------------------------------------------------
// SDK v2: createMcpHandler with a per-request McpServer factory.

async function buildV2() {
    const { McpServer, createMcpHandler, inputRequired, acceptedContent } = await import('@modelcontextprotocol/server');
    const TASKS_EXT = 'io.modelcontextprotocol/tasks';
    const tasks = new Map(); // taskId -> task state (the extension's durable store)

    /** taskView is the Task shape tasks/get returns for the current status. */
    function taskView(t) {
        const v = {
            taskId: t.taskId,
            status: t.status,
            statusMessage: t.statusMessage,
            createdAt: t.createdAt,
            lastUpdatedAt: t.lastUpdatedAt,
            ttlMs: 60000,
            pollIntervalMs: 50
        };
        if (t.status === 'input_required') v.inputRequests = t.inputRequests;
        if (t.status === 'completed') v.result = t.result;
        if (t.status === 'failed') v.error = t.error;
        return v;
    }
    function touch(t, status, message) {
        t.status = status;
        t.statusMessage = message;
        t.lastUpdatedAt = new Date().toISOString();
    }

    let handler; // assigned below; add_tool publishes through handler.notify

    const factory = ({ era }) => {
        const mcp = new McpServer(
            { name: 'bulkhead-js-v2', version: '2.4.0' },
            {
                capabilities: {
                    tools: { listChanged: true },
                    prompts: { listChanged: true },
                    resources: { listChanged: true },
                    extensions: { [TASKS_EXT]: {} }
                }
            }
        );
        registerCommon(mcp);

        mcp.registerTool(
            'confirm',
            { description: 'Asks the user to confirm an action (MRTR).', inputSchema: z.object({ action: z.string() }) },
            async ({ action }, ctx) => {
                const answer = acceptedContent(ctx.mcpReq.inputResponses, 'confirm');
                if (answer === undefined) {
                    emit({ kind: 'app', event: 'confirm.input_required', action, era });
                    return inputRequired({
                        inputRequests: {
                            confirm: inputRequired.elicit({ message: `Proceed with ${action}?`, requestedSchema: ELICIT_SCHEMA })
                        },
                        requestState: `confirm:${action}`
                    });
                }
                const state = ctx.mcpReq.requestState();
                emit({ kind: 'app', event: 'confirm.answered', action, answer, requestState: state ?? null });
                return { content: [{ type: 'text', text: answer.ok === true ? `confirmed ${action}` : `declined ${action}` }] };
            }
        );

        mcp.registerTool(
            'long_job',
            {
                description: 'Runs as a task when the client declares io.modelcontextprotocol/tasks.',
                inputSchema: z.object({ text: z.string(), mode: z.enum(['input', 'hold']).optional() })
            },
            async ({ text, mode }, ctx) => {
                const caps = ctx.mcpReq.envelope?.['io.modelcontextprotocol/clientCapabilities'];
                if (!caps?.extensions?.[TASKS_EXT]) {
                    emit({ kind: 'app', event: 'long_job.sync', text });
                    return { content: [{ type: 'text', text: `job ${text} done (no task)` }] };
                }
                const now = new Date().toISOString();
                const t = { taskId: randomUUID(), text, createdAt: now, lastUpdatedAt: now };
                // Seeded "working"; mode "input" (the default) moves to
                // input_required at the first tasks/get, and completes once
                // tasks/update answers; mode "hold" stays working until
                // tasks/cancel. State changes only on requests: no timers.
                touch(t, 'working', mode === 'hold' ? 'holding until cancelled' : 'started');
                if (mode !== 'hold') {
                    t.inputKey = `approve-${t.taskId.slice(0, 8)}`;
                    t.inputRequests = {
                        [t.inputKey]: inputRequired.elicit({ message: `Approve job ${text}?`, requestedSchema: ELICIT_SCHEMA })
                    };
                }
                tasks.set(t.taskId, t);
                emit({ kind: 'app', event: 'task.created', taskId: t.taskId, status: t.status });
                // CreateTaskResult: resultType "task" plus the Task fields.
                const { inputRequests: _omit, result: _r, ...seed } = taskView(t);
                return { resultType: 'task', ...seed };
            }
        );

        // The tasks extension methods. SDK v2 lets extension methods in
        // when registered with an explicit params schema.
        const TaskRef = z.looseObject({ taskId: z.string() });
        const lookup = taskId => {
            const t = tasks.get(taskId);
            if (!t) throw Object.assign(new Error(`unknown task ${taskId}`), { code: -32602 });
            return t;
        };
        mcp.server.setRequestHandler('tasks/get', { params: TaskRef }, async ({ taskId }) => {
            const t = lookup(taskId);
            if (t.status === 'working' && t.inputKey && !t.result) touch(t, 'input_required', 'waiting for approval');
            emit({ kind: 'app', event: 'task.get', taskId, status: t.status });
            return taskView(t);
        });
        // The SDK lifts inputResponses off every request's params (it is MRTR
        // wire material) and hands them over as ctx.mcpReq.inputResponses.
        mcp.server.setRequestHandler('tasks/update', { params: TaskRef }, async ({ taskId }, ctx) => {
            const inputResponses = ctx.mcpReq.inputResponses ?? {};
            const t = lookup(taskId);
            const answer = t.inputKey ? inputResponses[t.inputKey] : undefined;
            emit({ kind: 'app', event: 'task.update', taskId, inputResponses });
            if (t.status === 'input_required' && answer) {
                const ok = answer.action === 'accept' && answer.content?.ok === true;
                touch(t, 'completed', ok ? 'approved' : 'rejected');
                t.result = {
                    content: [{ type: 'text', text: `job ${t.text} ${ok ? 'approved' : 'rejected'}` }],
                    isError: !ok
                };
            }
            return {};
        });
        mcp.server.setRequestHandler('tasks/cancel', { params: TaskRef }, async ({ taskId }) => {
            const t = lookup(taskId);
            if (!['completed', 'failed', 'cancelled'].includes(t.status)) touch(t, 'cancelled', 'cancelled by client');
            emit({ kind: 'app', event: 'task.cancel', taskId, status: t.status });
            return {};
        });

        mcp.registerTool(
            'add_tool',
            { description: 'Registers dyn_<name> and announces tools/list_changed.', inputSchema: z.object({ name: z.string() }) },
            async ({ name }) => {
                dynamicTools.push(name);
                handler.notify.toolsChanged(); // to every open subscriptions/listen stream
                emit({ kind: 'app', event: 'add_tool', name });
                return { content: [{ type: 'text', text: `added dyn_${name}` }] };
            }
        );
        for (const name of dynamicTools) registerDynamic(mcp, name);
        return mcp;
    };

    /** registerCommon registers what v2 serves exactly like v1. */
    function registerCommon(mcp) {
        mcp.registerTool('echo', { description: 'Echoes text.', inputSchema: z.object({ text: z.string() }) }, async ({ text }) => ({
            content: [{ type: 'text', text }]
        }));
        mcp.registerTool(
            'region_echo',
            { description: 'Echoes text; region is mirrored as Mcp-Param-Region.', inputSchema: RegionArgs },
            async ({ region, text }) => ({
                content: [{ type: 'text', text: `${region}: ${text}` }]
            })
        );
        mcp.registerTool(
            'add',
            {
                description: 'Adds two integers.',
                inputSchema: z.object({ a: z.number().int(), b: z.number().int() }),
                outputSchema: z.object({ sum: z.number().int() })
            },
            async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }], structuredContent: { sum: a + b } })
        );
        mcp.registerTool('secret_tool', { description: 'Must be hidden by policy.' }, async () => {
            emit({ kind: 'app', event: 'secret_tool.called' });
            return { content: [{ type: 'text', text: 'secret tool ran' }] };
        });
        mcp.registerTool(
            'progress',
            { description: 'Reports progress on the response stream.', inputSchema: z.object({ steps: z.number().int().min(1).max(20) }) },
            async ({ steps }, ctx) => {
                const token = ctx.mcpReq._meta?.progressToken;
                for (let i = 1; i <= steps && token !== undefined; i++) {
                    await ctx.mcpReq.notify({
                        method: 'notifications/progress',
                        params: { progressToken: token, progress: i, total: steps, message: `step ${i}/${steps}` }
                    });
                }
                return { content: [{ type: 'text', text: `done ${steps} steps` }] };
            }
        );
        mcp.registerPrompt('greet', { description: 'Greets someone.', argsSchema: z.object({ name: z.string() }) }, ({ name }) =>
            greet(name)
        );
        mcp.registerResource('readme', 'docs://readme', { mimeType: 'text/plain', description: 'Public' }, async uri => ({
            contents: [{ uri: uri.href, mimeType: 'text/plain', text: README }]
        }));
        mcp.registerResource('secret', 'docs://secret', { mimeType: 'text/plain', description: 'Must be hidden by policy' }, async uri => ({
            contents: [{ uri: uri.href, mimeType: 'text/plain', text: SECRET }]
        }));
    }
    function registerDynamic(mcp, name) {
        mcp.registerTool(`dyn_${name}`, { description: `Added at runtime (${name}).` }, async () => ({
            content: [{ type: 'text', text: `dyn_${name} ran` }]
        }));
    }

    handler = createMcpHandler(factory, {
        legacy: opts.legacy,
        responseMode: opts['response-mode'],
        onerror: err => emit({ kind: 'error', message: String(err?.message ?? err) })
    });
    return request => handler.fetch(request);
}

// ---------------------------------------------------------------------------
// SDK v1: one McpServer + transport per session, as in the SDK's examples.

async function buildV1() {
    const { McpServer } = await import('@modelcontextprotocol/sdk/server/mcp.js');
    const { WebStandardStreamableHTTPServerTransport } = await import('@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js');
    const { InMemoryTaskStore } = await import('@modelcontextprotocol/sdk/experimental/tasks/stores/in-memory.js');
    const { ElicitResultSchema, isInitializeRequest } = await import('@modelcontextprotocol/sdk/types.js');

    const sessions = new Map(); // Mcp-Session-Id -> { mcp, transport }

    function newServer() {
        const mcp = new McpServer(
            { name: 'bulkhead-js-v1', version: '1.32.2' },
            {
                capabilities: {
                    tools: { listChanged: true },
                    prompts: { listChanged: true },
                    resources: { listChanged: true },
                    tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } }
                },
                taskStore: new InMemoryTaskStore()
            }
        );
        mcp.registerTool('echo', { description: 'Echoes text.', inputSchema: { text: z.string() } }, async ({ text }) => ({
            content: [{ type: 'text', text }]
        }));
        mcp.registerTool(
            'region_echo',
            { description: 'Echoes text; region is mirrored as Mcp-Param-Region.', inputSchema: RegionArgs },
            async ({ region, text }) => ({
                content: [{ type: 'text', text: `${region}: ${text}` }]
            })
        );
        mcp.registerTool(
            'add',
            {
                description: 'Adds two integers.',
                inputSchema: { a: z.number().int(), b: z.number().int() },
                outputSchema: { sum: z.number().int() }
            },
            async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }], structuredContent: { sum: a + b } })
        );
        mcp.registerTool('secret_tool', { description: 'Must be hidden by policy.' }, async () => {
            emit({ kind: 'app', event: 'secret_tool.called' });
            return { content: [{ type: 'text', text: 'secret tool ran' }] };
        });
        mcp.registerTool(
            'progress',
            { description: 'Reports progress on the response stream.', inputSchema: { steps: z.number().int().min(1).max(20) } },
            async ({ steps }, extra) => {
                const token = extra._meta?.progressToken;
                for (let i = 1; i <= steps && token !== undefined; i++) {
                    await extra.sendNotification({
                        method: 'notifications/progress',
                        params: { progressToken: token, progress: i, total: steps, message: `step ${i}/${steps}` }
                    });
                }
                return { content: [{ type: 'text', text: `done ${steps} steps` }] };
            }
        );
        mcp.registerTool(
            'confirm',
            { description: 'Asks the user to confirm an action (elicitation/create).', inputSchema: { action: z.string() } },
            async ({ action }, extra) => {
                emit({ kind: 'app', event: 'confirm.elicit', action });
                // Related to this request, so it rides this POST's SSE stream.
                const answer = await extra.sendRequest(
                    {
                        method: 'elicitation/create',
                        params: { mode: 'form', message: `Proceed with ${action}?`, requestedSchema: ELICIT_SCHEMA }
                    },
                    ElicitResultSchema
                );
                emit({ kind: 'app', event: 'confirm.answered', action, answer });
                const ok = answer.action === 'accept' && answer.content?.ok === true;
                return { content: [{ type: 'text', text: ok ? `confirmed ${action}` : `declined ${action}` }] };
            }
        );
        mcp.experimental.tasks.registerToolTask(
            'long_job',
            {
                description: 'SEP-1686 task tool: completes at once, or holds (mode "hold") until cancelled.',
                inputSchema: { text: z.string(), mode: z.enum(['input', 'hold']).optional() },
                execution: { taskSupport: 'optional' }
            },
            {
                createTask: async ({ text, mode }, extra) => {
                    const task = await extra.taskStore.createTask({ ttl: 60000, pollInterval: 50 });
                    emit({ kind: 'app', event: 'task.created', taskId: task.taskId, status: task.status });
                    if (mode !== 'hold') {
                        // Finishes right after the CreateTaskResult goes out.
                        setImmediate(() =>
                            extra.taskStore
                                .storeTaskResult(task.taskId, 'completed', { content: [{ type: 'text', text: `job ${text} done` }] })
                                .catch(err => emit({ kind: 'error', message: String(err) }))
                        );
                    }
                    return { task };
                },
                getTask: async (_args, extra) => extra.taskStore.getTask(extra.taskId),
                getTaskResult: async (_args, extra) => extra.taskStore.getTaskResult(extra.taskId)
            }
        );
        mcp.registerTool(
            'add_tool',
            { description: 'Registers dyn_<name> and announces tools/list_changed.', inputSchema: { name: z.string() } },
            async ({ name }) => {
                dynamicTools.push(name);
                // Registering on a connected server sends tools/list_changed on
                // that session's GET stream; every session gets the new tool.
                for (const s of sessions.values()) registerDynamic(s.mcp, name);
                emit({ kind: 'app', event: 'add_tool', name, sessions: sessions.size });
                return { content: [{ type: 'text', text: `added dyn_${name}` }] };
            }
        );
        mcp.registerPrompt('greet', { description: 'Greets someone.', argsSchema: { name: z.string() } }, ({ name }) => greet(name));
        mcp.registerResource('readme', 'docs://readme', { mimeType: 'text/plain', description: 'Public' }, async uri => ({
            contents: [{ uri: uri.href, mimeType: 'text/plain', text: README }]
        }));
        mcp.registerResource('secret', 'docs://secret', { mimeType: 'text/plain', description: 'Must be hidden by policy' }, async uri => ({
            contents: [{ uri: uri.href, mimeType: 'text/plain', text: SECRET }]
        }));
        for (const name of dynamicTools) registerDynamic(mcp, name);
        return mcp;
    }
    function registerDynamic(mcp, name) {
        mcp.registerTool(`dyn_${name}`, { description: `Added at runtime (${name}).` }, async () => ({
            content: [{ type: 'text', text: `dyn_${name} ran` }]
        }));
    }

    return async (request, body) => {
        const sid = request.headers.get('mcp-session-id');
        const existing = sid ? sessions.get(sid) : undefined;
        if (existing) return existing.transport.handleRequest(request, { parsedBody: body });
        if (!sid && request.method === 'POST' && isInitializeRequest(body)) {
            const transport = new WebStandardStreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                onsessioninitialized: id => {
                    sessions.set(id, { mcp, transport });
                    emit({ kind: 'app', event: 'session.open', sessionId: id });
                },
                onsessionclosed: id => {
                    sessions.delete(id);
                    emit({ kind: 'app', event: 'session.close', sessionId: id });
                }
            });
            const mcp = newServer();
            mcp.server.onerror = err => emit({ kind: 'error', message: String(err?.message ?? err) });
            await mcp.connect(transport);
            return transport.handleRequest(request, { parsedBody: body });
        }
        // The SDK examples' answer to anything else (unknown or missing session).
        return Response.json(
            { jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: No valid session ID provided' }, id: null },
            { status: 400 }
        );
    };
}

// ---------------------------------------------------------------------------
// node:http <-> web Request/Response, recording both directions.

let seq = 0;

function headersObject(h) {
    const out = {};
    for (const [k, v] of h) out[k] = v;
    return out;
}

/** SSEParser splits an event stream into events and emits each one. */
class SSEParser {
    constructor(onEvent) {
        this.buf = '';
        this.onEvent = onEvent;
    }
    push(text) {
        this.buf += text;
        let m;
        while ((m = /\r?\n\r?\n/.exec(this.buf))) {
            const block = this.buf.slice(0, m.index);
            this.buf = this.buf.slice(m.index + m[0].length);
            const ev = {};
            const data = [];
            for (const line of block.split(/\r?\n/)) {
                if (line.startsWith(':')) {
                    ev.comment = line.slice(1).trim();
                    continue;
                }
                const i = line.indexOf(':');
                const field = i < 0 ? line : line.slice(0, i);
                const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
                if (field === 'data') data.push(value);
                else if (field) ev[field] = value;
            }
            if (data.length) ev.data = parseMaybeJSON(data.join('\n'));
            this.onEvent(ev);
        }
    }
}

async function serve(handle) {
    const server = http.createServer(async (req, res) => {
        const n = ++seq;
        const chunks = [];
        for await (const c of req) chunks.push(c);
        const raw = Buffer.concat(chunks);
        const text = raw.toString('utf8');
        const body = parseMaybeJSON(text);
        const headers = new Headers();
        for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
        emit({ kind: 'request', seq: n, method: req.method, path: req.url, headers: headersObject(headers), body });

        // Closing the response before it finished is the client cancelling.
        const abort = new AbortController();
        res.on('close', () => {
            if (!res.writableFinished) abort.abort();
        });
        const request = new Request(`http://${req.headers.host ?? opts.host}${req.url}`, {
            method: req.method,
            headers,
            body: req.method === 'GET' || req.method === 'HEAD' || raw.length === 0 ? undefined : raw,
            signal: abort.signal
        });

        let response;
        try {
            response = await handle(request, typeof body === 'object' ? body : undefined);
        } catch (err) {
            emit({ kind: 'error', seq: n, message: String(err?.stack ?? err) });
            response = Response.json(
                { jsonrpc: '2.0', error: { code: -32603, message: 'harness: handler threw' }, id: null },
                { status: 500 }
            );
        }
        emit({ kind: 'response', seq: n, status: response.status, headers: headersObject(response.headers) });
        res.writeHead(response.status, headersObject(response.headers));
        res.flushHeaders();

        const isSSE = (response.headers.get('content-type') ?? '').startsWith('text/event-stream');
        const sse = new SSEParser(ev => emit({ kind: 'sse', seq: n, ...ev }));
        const decoder = new TextDecoder();
        let whole = '';
        let reason = 'complete';
        if (response.body) {
            const reader = response.body.getReader();
            abort.signal.addEventListener('abort', () => reader.cancel().catch(() => {}));
            try {
                for (;;) {
                    const { done, value } = await reader.read();
                    if (done) break;
                    const chunk = decoder.decode(value, { stream: true });
                    if (isSSE) sse.push(chunk);
                    else whole += chunk;
                    res.write(value);
                }
            } catch {
                reason = 'client-closed';
            }
        }
        if (abort.signal.aborted) reason = 'client-closed';
        if (!isSSE && whole !== '') emit({ kind: 'body', seq: n, body: parseMaybeJSON(whole) });
        emit({ kind: 'end', seq: n, reason });
        res.end();
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(Number(opts.port), opts.host, resolve);
    });
    const { port } = server.address();
    emit({ listening: `http://${opts.host}:${port}/mcp` });
    return server;
}

// ---------------------------------------------------------------------------

if (opts.sdk !== 'v1' && opts.sdk !== 'v2') {
    process.stderr.write(`server.mjs: --sdk must be v1 or v2, not ${opts.sdk}\n`);
    process.exit(2);
}
const handle = opts.sdk === 'v2' ? await buildV2() : await buildV1();
await serve(handle);

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
if (opts['exit-on-stdin-eof']) {
    // The parent holds our stdin open; EOF means it went away.
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
}
