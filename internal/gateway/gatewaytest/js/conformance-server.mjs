#!/usr/bin/env node
// conformance-server.mjs: the server side of the official MCP conformance
// suite (@modelcontextprotocol/conformance, `conformance server --url ...`),
// built with the official TypeScript SDKs, so that the suite can be run
// against it directly and through the Bulkhead gateway and the two runs
// compared (internal/server/gateway_conformance_test.go).
//
//   node conformance-server.mjs [--port 0] [--host 127.0.0.1] [--no-resume] [--exit-on-stdin-eof]
//
// It prints {"listening":"http://127.0.0.1:PORT/mcp","tools":[...]} on
// stdout once (tools: every tool name either era serves), then nothing else
// there; SDK error reports go to stderr.
//
// One endpoint serves both protocol eras, the way a server that supports
// both revisions is deployed:
//   2026-07-28  requests carrying the per-request _meta envelope, served by
//               @modelcontextprotocol/server 2.4.0's createMcpHandler
//               (stateless, a fresh McpServer per request, MRTR, listen).
//   2025-11-25  everything else (initialize, sessions, GET streams), served
//               by @modelcontextprotocol/sdk 1.32.2's low-level Server over
//               its web-standard streamable HTTP transport, one per session,
//               with an event store so streams can be resumed (SEP-1699):
//               each POST stream opens with a priming event (an id and
//               empty data) and a retry hint. --no-resume leaves the store
//               out, as many servers do: no event ids, no priming, no resume.
// isLegacyRequest, the v2 SDK's own predicate, decides which is which.
//
// The scenarios name the features they exercise (tools test_*, prompts
// test_*, resources test://...). TOOLS, PROMPTS, RESOURCES and TEMPLATE
// declare the ones both eras share, once, as plain JSON Schema and handlers
// over a small era-neutral context; each era's builder registers them with
// its SDK and adds what only that era has.

import http from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as z from 'zod';

const { values: opts } = parseArgs({
    options: {
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        'no-resume': { type: 'boolean', default: false },
        'exit-on-stdin-eof': { type: 'boolean', default: false }
    }
});

const SERVER_INFO = { name: 'bulkhead-conformance-server', version: '1.0.0' };

// A 1x1 PNG and a tiny WAV: the suite checks type, mimeType and that data
// is base64, not what the picture shows.
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';

const text = t => ({ type: 'text', text: t });
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
const NO_ARGS = { type: 'object', properties: {} };

// ---------------------------------------------------------------------------
// Features both eras serve. A tool's run(args, io) gets io =
// { progressToken, notify(method, params) }; the legacy era adds
// ask(method, params) for server-to-client requests.

const TOOLS = {
    test_simple_text: {
        description: 'Returns one text block.',
        run: async () => ({ content: [text('This is a simple text response for testing.')] })
    },
    test_image_content: {
        description: 'Returns one image block.',
        run: async () => ({ content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] })
    },
    test_audio_content: {
        description: 'Returns one audio block.',
        run: async () => ({ content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] })
    },
    test_embedded_resource: {
        description: 'Returns an embedded text resource.',
        run: async () => ({
            content: [
                {
                    type: 'resource',
                    resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' }
                }
            ]
        })
    },
    test_multiple_content_types: {
        description: 'Returns text, an image and an embedded resource.',
        run: async () => ({
            content: [
                text('Multiple content types test:'),
                { type: 'image', data: PNG, mimeType: 'image/png' },
                {
                    type: 'resource',
                    resource: {
                        uri: 'test://mixed-content-resource',
                        mimeType: 'application/json',
                        text: JSON.stringify({ test: 'data', value: 123 })
                    }
                }
            ]
        })
    },
    test_error_handling: {
        description: 'Always fails: the SDK turns the throw into an isError result.',
        run: async () => {
            throw new Error('This tool intentionally returns an error for testing');
        }
    },
    test_tool_with_progress: {
        description: 'Reports progress 0, 50, 100 of 100 when the caller sent a progress token.',
        run: async (_args, io) => {
            // Progress goes only to a caller that asked for it (the spec's MUST).
            for (const progress of io.progressToken === undefined ? [] : [0, 50, 100]) {
                await io.notify('notifications/progress', { progressToken: io.progressToken, progress, total: 100 });
                if (progress < 100) await sleep(50);
            }
            return { content: [text(`progress done (token ${io.progressToken ?? 'none'})`)] };
        }
    },
    json_schema_2020_12_tool: {
        description: 'Advertises a JSON Schema 2020-12 input schema that must survive tools/list verbatim.',
        // Hand-written so that every keyword the scenario looks for is
        // advertised exactly as written ($schema, $defs with $anchor,
        // allOf/anyOf, if/then/else, additionalProperties).
        inputSchema: {
            $schema: 'https://json-schema.org/draft/2020-12/schema',
            type: 'object',
            $defs: {
                address: {
                    $anchor: 'addressDef',
                    type: 'object',
                    properties: { street: { type: 'string' }, city: { type: 'string' } }
                }
            },
            properties: {
                name: { type: 'string' },
                address: { $ref: '#/$defs/address' },
                contactMethod: { type: 'string', enum: ['phone', 'email'] },
                phone: { type: 'string' },
                email: { type: 'string' }
            },
            allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
            if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
            then: { required: ['phone'] },
            else: { required: ['email'] },
            additionalProperties: false
        },
        run: async args => ({ content: [text(`json_schema_2020_12_tool got ${JSON.stringify(args)}`)] })
    }
};

const PROMPTS = {
    test_simple_prompt: {
        description: 'A prompt without arguments.',
        args: [],
        render: () => [{ role: 'user', content: text('This is a simple prompt for testing.') }]
    },
    test_prompt_with_arguments: {
        description: 'A prompt with two required arguments.',
        args: [
            { name: 'arg1', description: 'First test argument' },
            { name: 'arg2', description: 'Second test argument' }
        ],
        render: ({ arg1, arg2 }) => [{ role: 'user', content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }]
    },
    test_prompt_with_embedded_resource: {
        description: 'A prompt that embeds the resource it is given.',
        args: [{ name: 'resourceUri', description: 'URI of the resource to embed' }],
        render: ({ resourceUri }) => [
            {
                role: 'user',
                content: { type: 'resource', resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' } }
            },
            { role: 'user', content: text('Please process the embedded resource above.') }
        ]
    },
    test_prompt_with_image: {
        description: 'A prompt with an image.',
        args: [],
        render: () => [
            { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
            { role: 'user', content: text('Please analyze the image above.') }
        ]
    }
};

const RESOURCES = [
    {
        name: 'static-text',
        uri: 'test://static-text',
        description: 'A static text resource.',
        mimeType: 'text/plain',
        contents: uri => ({ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' })
    },
    {
        name: 'static-binary',
        uri: 'test://static-binary',
        description: 'A static binary resource (a PNG).',
        mimeType: 'image/png',
        contents: uri => ({ uri, mimeType: 'image/png', blob: PNG })
    },
    {
        name: 'watched-resource',
        uri: 'test://watched-resource',
        description: 'A resource to subscribe to.',
        mimeType: 'text/plain',
        contents: uri => ({ uri, mimeType: 'text/plain', text: 'Watched resource content' })
    }
];

const TEMPLATE = {
    name: 'template',
    uriTemplate: 'test://template/{id}/data',
    pattern: /^test:\/\/template\/([^/]+)\/data$/,
    description: 'Substitutes {id}.',
    mimeType: 'application/json',
    contents: (uri, id) => ({
        uri,
        mimeType: 'application/json',
        text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` })
    })
};

// The scenarios only need a well-formed answer; fresh each time, since an
// SDK may decorate the result it is handed.
const completion = () => ({ completion: { values: [], total: 0, hasMore: false } });

// ---------------------------------------------------------------------------
// 2026-07-28: createMcpHandler, a fresh McpServer per request.

async function buildModern() {
    const s = await import('@modelcontextprotocol/server');
    const { McpServer, ResourceTemplate, inputRequired, acceptedContent, fromJsonSchema } = s;

    // requestState comes back from the client: it is sealed (HMAC) when
    // minted and verified by the SDK before a handler sees it, so a
    // tampered state is refused with -32602. Every round of a flow is
    // served by this process, so a per-process key is enough.
    const seal = s.createRequestStateCodec({ key: randomBytes(32) });

    const ask = {
        name: () =>
            inputRequired.elicit({
                message: 'What is your name?',
                requestedSchema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] }
            }),
        ok: () =>
            inputRequired.elicit({
                message: 'Please confirm',
                requestedSchema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] }
            }),
        sample: prompt =>
            inputRequired.createMessage({ messages: [{ role: 'user', content: text(prompt) }], maxTokens: 64 })
    };
    const sampled = r => (typeof r?.content?.text === 'string' ? r.content.text : undefined);

    // Tools only the 2026-07-28 era has: multi-round-trip (MRTR) input,
    // and the diagnostics the server-stateless scenario calls by name.
    const modernTools = {
        test_input_required_result_elicitation: async (_a, ctx) => {
            const name = acceptedContent(ctx.mcpReq.inputResponses, 'user_name')?.name;
            if (typeof name !== 'string') return inputRequired({ inputRequests: { user_name: ask.name() } });
            return { content: [text(`Hello, ${name}!`)] };
        },
        test_input_required_result_sampling: async (_a, ctx) => {
            const answer = sampled(ctx.mcpReq.inputResponses?.capital_question);
            if (answer === undefined) return inputRequired({ inputRequests: { capital_question: ask.sample('What is the capital of France?') } });
            return { content: [text(`Sampling response: ${answer}`)] };
        },
        test_input_required_result_list_roots: async (_a, ctx) => {
            const roots = ctx.mcpReq.inputResponses?.client_roots?.roots;
            if (!Array.isArray(roots)) return inputRequired({ inputRequests: { client_roots: inputRequired.listRoots() } });
            return { content: [text(`${roots.length} root(s): ${roots.map(r => r.uri).join(', ')}`)] };
        },
        test_input_required_result_request_state: async (_a, ctx) => {
            const state = ctx.mcpReq.requestState();
            if (state?.flow === 'request_state' && acceptedContent(ctx.mcpReq.inputResponses, 'confirm') !== undefined) {
                return { content: [text('requestState verified, confirmation received')] };
            }
            return inputRequired({ inputRequests: { confirm: ask.ok() }, requestState: await seal.mint({ flow: 'request_state', n: randomUUID() }) });
        },
        test_input_required_result_multiple_inputs: async (_a, ctx) => {
            const r = ctx.mcpReq.inputResponses;
            const name = acceptedContent(r, 'user_name')?.name;
            const greeting = sampled(r?.greeting);
            const roots = r?.client_roots?.roots;
            if (typeof name === 'string' && greeting !== undefined && Array.isArray(roots)) {
                return { content: [text(`${greeting} ${name} (${roots.length} roots)`)] };
            }
            return inputRequired({
                inputRequests: { user_name: ask.name(), greeting: ask.sample('Generate a greeting'), client_roots: inputRequired.listRoots() },
                requestState: await seal.mint({ flow: 'multiple_inputs', n: randomUUID() })
            });
        },
        test_input_required_result_multi_round: async (_a, ctx) => {
            // The round lives in the sealed state: nothing is kept between requests.
            const state = ctx.mcpReq.requestState();
            const round = state?.flow === 'multi_round' ? state.round : 0;
            if (round === 0) {
                return inputRequired({ inputRequests: { step1: ask.name() }, requestState: await seal.mint({ flow: 'multi_round', round: 1 }) });
            }
            if (round === 1) {
                const name = acceptedContent(ctx.mcpReq.inputResponses, 'step1')?.name ?? 'someone';
                return inputRequired({
                    inputRequests: {
                        step2: inputRequired.elicit({
                            message: 'What is your favorite color?',
                            requestedSchema: { type: 'object', properties: { color: { type: 'string' } }, required: ['color'] }
                        })
                    },
                    requestState: await seal.mint({ flow: 'multi_round', round: 2, name })
                });
            }
            const color = acceptedContent(ctx.mcpReq.inputResponses, 'step2')?.color ?? 'no color';
            return { content: [text(`${state.name} likes ${color}`)] };
        },
        test_input_required_result_tampered_state: async (_a, ctx) => {
            if (ctx.mcpReq.requestState() !== undefined && acceptedContent(ctx.mcpReq.inputResponses, 'confirm') !== undefined) {
                return { content: [text('requestState intact')] };
            }
            return inputRequired({ inputRequests: { confirm: ask.ok() }, requestState: await seal.mint({ flow: 'tampered_state' }) });
        },
        test_input_required_result_capabilities: async (_a, ctx) => {
            if (ctx.mcpReq.inputResponses !== undefined) return { content: [text('inputs received')] };
            // Ask only for what the caller declared it can answer.
            const caps = ctx.mcpReq.envelope?.[s.CLIENT_CAPABILITIES_META_KEY] ?? {};
            const inputRequests = {};
            if (caps.elicitation) inputRequests.user_name = ask.name();
            if (caps.sampling) inputRequests.greeting = ask.sample('Generate a short greeting');
            if (caps.roots) inputRequests.client_roots = inputRequired.listRoots();
            if (Object.keys(inputRequests).length === 0) return { content: [text('the caller declared no input capability')] };
            return inputRequired({ inputRequests });
        },
        // Needs sampling; a caller that did not declare it gets -32021
        // from the SDK before this returns.
        test_missing_capability: async (_a, ctx) => {
            if (ctx.mcpReq.inputResponses?.llm_answer === undefined) {
                return inputRequired({ inputRequests: { llm_answer: ask.sample('Reply with: pong') } });
            }
            return { content: [text('sampled')] };
        },
        test_streaming_elicitation: async () => ({ content: [text('a result and nothing else on the stream')] }),
        test_logging_tool: async (_a, ctx) => {
            // Delivered only when the request set _meta logLevel.
            await ctx.mcpReq.log('info', 'test_logging_tool ran');
            return { content: [text('logged (if asked to)')] };
        },
        test_trigger_tool_change: async () => {
            handler.notify.toolsChanged();
            return { content: [text('tools/list_changed published')] };
        },
        test_trigger_prompt_change: async () => {
            handler.notify.promptsChanged();
            return { content: [text('prompts/list_changed published')] };
        }
    };

    const factory = () => {
        const mcp = new McpServer(SERVER_INFO, {
            capabilities: {
                tools: { listChanged: true },
                prompts: { listChanged: true },
                resources: { listChanged: true },
                completions: {}
            },
            requestState: { verify: seal.verify }
        });
        for (const [name, t] of Object.entries(TOOLS)) {
            mcp.registerTool(name, { description: t.description, inputSchema: fromJsonSchema(t.inputSchema ?? NO_ARGS) }, (args, ctx) =>
                t.run(args, {
                    progressToken: ctx.mcpReq._meta?.progressToken,
                    notify: (method, params) => ctx.mcpReq.notify({ method, params })
                })
            );
        }
        for (const [name, run] of Object.entries(modernTools)) {
            mcp.registerTool(name, { description: `2026-07-28 diagnostic ${name}`, inputSchema: fromJsonSchema(NO_ARGS) }, run);
        }
        // SEP-2243: region is mirrored into an Mcp-Param-Region header,
        // which the SDK checks against the body.
        mcp.registerTool(
            'test_x_mcp_header',
            {
                description: 'Has an x-mcp-header argument (SEP-2243).',
                inputSchema: fromJsonSchema({
                    type: 'object',
                    properties: { region: { type: 'string', 'x-mcp-header': 'Region' }, level: { type: 'integer' } }
                })
            },
            async args => ({ content: [text(`region=${args.region ?? 'none'}`)] })
        );
        for (const [name, p] of Object.entries(PROMPTS)) {
            const shape = Object.fromEntries(p.args.map(a => [a.name, z.string().describe(a.description)]));
            const config = { description: p.description, ...(p.args.length ? { argsSchema: z.object(shape) } : {}) };
            mcp.registerPrompt(name, config, p.args.length ? args => ({ messages: p.render(args) }) : () => ({ messages: p.render({}) }));
        }
        // A prompt can ask for input too (MRTR on prompts/get).
        mcp.registerPrompt('test_input_required_result_prompt', { description: 'Asks for context before rendering.' }, ctx => {
            const context = acceptedContent(ctx.mcpReq.inputResponses, 'user_context')?.context;
            if (typeof context !== 'string') {
                return inputRequired({
                    inputRequests: {
                        user_context: inputRequired.elicit({
                            message: 'What context should the prompt use?',
                            requestedSchema: { type: 'object', properties: { context: { type: 'string' } }, required: ['context'] }
                        })
                    }
                });
            }
            return { messages: [{ role: 'user', content: text(`Context: ${context}`) }] };
        });
        for (const r of RESOURCES) {
            mcp.registerResource(r.name, r.uri, { description: r.description, mimeType: r.mimeType }, async uri => ({
                contents: [r.contents(uri.href)]
            }));
        }
        mcp.registerResource(
            TEMPLATE.name,
            new ResourceTemplate(TEMPLATE.uriTemplate, { list: undefined }),
            { description: TEMPLATE.description, mimeType: TEMPLATE.mimeType },
            async (uri, vars) => ({ contents: [TEMPLATE.contents(uri.href, String(vars.id))] })
        );
        mcp.server.setRequestHandler('completion/complete', async () => completion());
        return mcp;
    };

    // legacy 'reject': the 2025 era never reaches this handler (see serve).
    const handler = s.createMcpHandler(factory, { legacy: 'reject', onerror: err => warn('v2', err) });
    return {
        fetch: request => handler.fetch(request),
        isLegacy: (request, body) => s.isLegacyRequest(request, body),
        sdk: s,
        tools: [...Object.keys(TOOLS), ...Object.keys(modernTools), 'test_x_mcp_header']
    };
}

// ---------------------------------------------------------------------------
// 2025-11-25: SDK v1's low-level Server, one per session.

async function buildLegacy() {
    const { Server } = await import('@modelcontextprotocol/sdk/server/index.js');
    const { WebStandardStreamableHTTPServerTransport } = await import('@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js');
    const t = await import('@modelcontextprotocol/sdk/types.js');

    const sessions = new Map(); // Mcp-Session-Id -> transport

    // Server-to-client requests ride the calling request's stream; the
    // answer comes back on a later POST of the same session.
    const elicitTool = (description, message, requestedSchema) => ({
        description,
        run: async (args, io) => {
            const r = await io.ask('elicitation/create', { message: message(args), requestedSchema }, t.ElicitResultSchema);
            return { content: [text(`User response: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
        }
    });
    const legacyTools = {
        test_tool_with_logging: {
            description: 'Logs three messages at info while it runs.',
            run: async (_args, io) => {
                for (const [i, msg] of ['Tool execution started', 'Tool processing data', 'Tool execution completed'].entries()) {
                    if (i > 0) await sleep(50);
                    await io.notify('notifications/message', { level: 'info', data: msg });
                }
                return { content: [text('Tool with logging executed successfully')] };
            }
        },
        test_sampling: {
            description: 'Asks the client for an LLM completion.',
            inputSchema: { type: 'object', properties: { prompt: { type: 'string' } }, required: ['prompt'] },
            run: async ({ prompt }, io) => {
                const r = await io.ask(
                    'sampling/createMessage',
                    { messages: [{ role: 'user', content: text(prompt) }], maxTokens: 100 },
                    t.CreateMessageResultSchema
                );
                return { content: [text(`LLM response: ${r.content?.text ?? JSON.stringify(r.content)}`)] };
            }
        },
        test_elicitation: {
            ...elicitTool('Asks the user for input.', a => a.message, {
                type: 'object',
                properties: { response: { type: 'string', description: "User's response" } },
                required: ['response']
            }),
            inputSchema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }
        },
        test_elicitation_sep1034_defaults: elicitTool('Elicits a form whose fields have defaults (SEP-1034).', () => 'Check the defaults', {
            type: 'object',
            properties: {
                name: { type: 'string', default: 'John Doe' },
                age: { type: 'integer', default: 30 },
                score: { type: 'number', default: 95.5 },
                status: { type: 'string', enum: ['active', 'inactive', 'pending'], default: 'active' },
                verified: { type: 'boolean', default: true }
            }
        }),
        test_elicitation_sep1330_enums: elicitTool('Elicits every enum shape (SEP-1330).', () => 'Pick options', {
            type: 'object',
            properties: {
                untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
                titledSingle: {
                    type: 'string',
                    oneOf: [
                        { const: 'value1', title: 'First Option' },
                        { const: 'value2', title: 'Second Option' },
                        { const: 'value3', title: 'Third Option' }
                    ]
                },
                legacyEnum: { type: 'string', enum: ['opt1', 'opt2', 'opt3'], enumNames: ['Option One', 'Option Two', 'Option Three'] },
                untitledMulti: { type: 'array', minItems: 1, maxItems: 3, items: { type: 'string', enum: ['option1', 'option2', 'option3'] } },
                titledMulti: {
                    type: 'array',
                    minItems: 1,
                    maxItems: 3,
                    items: {
                        anyOf: [
                            { const: 'value1', title: 'First Choice' },
                            { const: 'value2', title: 'Second Choice' },
                            { const: 'value3', title: 'Third Choice' }
                        ]
                    }
                }
            }
        }),
        test_reconnection: {
            description: 'Closes its own response stream mid-call; the result is replayed to a client that resumes (SEP-1699).',
            run: async (_args, io) => {
                io.closeStream?.();
                await sleep(100);
                return { content: [text('result sent after the stream was closed')] };
            }
        }
    };
    const tools = { ...TOOLS, ...legacyTools };

    function newServer() {
        const server = new Server(SERVER_INFO, {
            capabilities: {
                tools: { listChanged: true },
                prompts: { listChanged: true },
                resources: { subscribe: true, listChanged: true },
                logging: {},
                completions: {}
            }
        });
        const subscribed = new Set();
        server.setRequestHandler(t.ListToolsRequestSchema, async () => ({
            tools: Object.entries(tools).map(([name, d]) => ({ name, description: d.description, inputSchema: d.inputSchema ?? NO_ARGS }))
        }));
        server.setRequestHandler(t.CallToolRequestSchema, async (req, extra) => {
            const tool = tools[req.params.name];
            if (!tool) throw new t.McpError(t.ErrorCode.InvalidParams, `unknown tool ${req.params.name}`);
            const io = {
                progressToken: req.params._meta?.progressToken,
                notify: (method, params) => extra.sendNotification({ method, params }),
                ask: (method, params, schema) => extra.sendRequest({ method, params }, schema),
                closeStream: extra.closeSSEStream
            };
            try {
                return await tool.run(req.params.arguments ?? {}, io);
            } catch (err) {
                // A tool's failure is a result the model can read, not a
                // protocol error.
                return { isError: true, content: [text(String(err?.message ?? err))] };
            }
        });
        server.setRequestHandler(t.ListPromptsRequestSchema, async () => ({
            prompts: Object.entries(PROMPTS).map(([name, p]) => ({
                name,
                description: p.description,
                arguments: p.args.map(a => ({ ...a, required: true }))
            }))
        }));
        server.setRequestHandler(t.GetPromptRequestSchema, async req => {
            const p = PROMPTS[req.params.name];
            if (!p) throw new t.McpError(t.ErrorCode.InvalidParams, `unknown prompt ${req.params.name}`);
            const args = req.params.arguments ?? {};
            const missing = p.args.filter(a => typeof args[a.name] !== 'string').map(a => a.name);
            if (missing.length) throw new t.McpError(t.ErrorCode.InvalidParams, `missing arguments: ${missing.join(', ')}`);
            return { description: p.description, messages: p.render(args) };
        });
        server.setRequestHandler(t.ListResourcesRequestSchema, async () => ({
            resources: RESOURCES.map(({ name, uri, description, mimeType }) => ({ name, uri, description, mimeType }))
        }));
        server.setRequestHandler(t.ListResourceTemplatesRequestSchema, async () => ({
            resourceTemplates: [
                { name: TEMPLATE.name, uriTemplate: TEMPLATE.uriTemplate, description: TEMPLATE.description, mimeType: TEMPLATE.mimeType }
            ]
        }));
        server.setRequestHandler(t.ReadResourceRequestSchema, async req => {
            const uri = req.params.uri;
            const r = RESOURCES.find(r => r.uri === uri);
            if (r) return { contents: [r.contents(uri)] };
            const m = TEMPLATE.pattern.exec(uri);
            if (m) return { contents: [TEMPLATE.contents(uri, decodeURIComponent(m[1]))] };
            throw new t.McpError(t.ErrorCode.InvalidParams, 'Resource not found', { uri });
        });
        server.setRequestHandler(t.SubscribeRequestSchema, async req => {
            subscribed.add(req.params.uri);
            return {};
        });
        server.setRequestHandler(t.UnsubscribeRequestSchema, async req => {
            subscribed.delete(req.params.uri);
            return {};
        });
        server.setRequestHandler(t.CompleteRequestSchema, async () => completion());
        server.onerror = err => warn('v1', err);
        return server;
    }

    const handle = async (request, body) => {
        const sid = request.headers.get('mcp-session-id');
        if (sid) {
            const transport = sessions.get(sid);
            if (transport) return transport.handleRequest(request, { parsedBody: body });
            return rpcError(404, -32001, 'Session not found');
        }
        if (request.method !== 'POST' || !t.isInitializeRequest(body)) {
            return rpcError(400, -32000, 'Bad Request: initialize first, then send Mcp-Session-Id');
        }
        const resume = opts['no-resume'] ? {} : { eventStore: memoryEventStore(), retryInterval: 500 };
        const transport = new WebStandardStreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            ...resume, // retryInterval: how soon a client should come back
            onsessioninitialized: id => sessions.set(id, transport),
            onsessionclosed: id => sessions.delete(id)
        });
        await newServer().connect(transport);
        return transport.handleRequest(request, { parsedBody: body });
    };
    return { handle, tools: Object.keys(tools) };
}

/** memoryEventStore keeps a session's SSE events so a stream can resume. */
function memoryEventStore() {
    const streams = new Map(); // streamId -> [{ id, message }]
    let n = 0;
    return {
        async storeEvent(streamId, message) {
            const id = `${streamId}.${++n}`;
            if (!streams.has(streamId)) streams.set(streamId, []);
            streams.get(streamId).push({ id, message });
            return id;
        },
        async getStreamIdForEventId(eventId) {
            for (const [streamId, events] of streams) if (events.some(e => e.id === eventId)) return streamId;
            return undefined;
        },
        async replayEventsAfter(lastEventId, { send }) {
            for (const [streamId, events] of streams) {
                const i = events.findIndex(e => e.id === lastEventId);
                if (i < 0) continue;
                for (const e of events.slice(i + 1)) await send(e.id, e.message);
                return streamId;
            }
            throw new Error(`unknown event id ${lastEventId}`);
        }
    };
}

// ---------------------------------------------------------------------------
// HTTP: node:http <-> web Request/Response, Host and Origin checked first.

function rpcError(status, code, message) {
    return Response.json({ jsonrpc: '2.0', error: { code, message }, id: null }, { status });
}

// warn reports on stderr; many reports are the SDKs refusing the
// scenarios' malformed probes, as they should, so one line each.
function warn(who, err) {
    process.stderr.write(`conformance-server ${who}: ${String(err?.message ?? err).split('\n')[0]}\n`);
}

async function serve(modern, legacy) {
    const { hostHeaderValidationResponse, originValidationResponse, localhostAllowedHostnames, localhostAllowedOrigins } = modern.sdk;
    const server = http.createServer(async (req, res) => {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        const raw = Buffer.concat(chunks);
        let body;
        try {
            body = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
        } catch {
            body = undefined;
        }
        const headers = new Headers();
        for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
        const abort = new AbortController();
        res.on('close', () => {
            if (!res.writableFinished) abort.abort();
        });
        const request = new Request(`http://${opts.host}${req.url}`, {
            method: req.method,
            headers,
            body: req.method === 'GET' || req.method === 'HEAD' || raw.length === 0 ? undefined : raw,
            signal: abort.signal
        });

        let response;
        try {
            // DNS rebinding: a localhost server answers only to localhost
            // names, whatever address the request reached.
            response =
                hostHeaderValidationResponse(request, localhostAllowedHostnames()) ??
                originValidationResponse(request, localhostAllowedOrigins()) ??
                ((await modern.isLegacy(request.clone(), body)) ? await legacy.handle(request, body) : await modern.fetch(request));
        } catch (err) {
            warn('http', err);
            response = rpcError(500, -32603, 'conformance-server: handler threw');
        }
        const out = {};
        for (const [k, v] of response.headers) out[k] = v;
        res.writeHead(response.status, out);
        res.flushHeaders();
        if (response.body) {
            const reader = response.body.getReader();
            abort.signal.addEventListener('abort', () => reader.cancel().catch(() => {}));
            try {
                for (;;) {
                    const { done, value } = await reader.read();
                    if (done) break;
                    res.write(value);
                }
            } catch {
                // the client went away
            }
        }
        res.end();
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(Number(opts.port), opts.host, resolve);
    });
    const { port } = server.address();
    // The tools of both eras, so that a gateway's catalog can list them.
    const tools = [...new Set([...modern.tools, ...legacy.tools])].sort();
    process.stdout.write(JSON.stringify({ listening: `http://${opts.host}:${port}/mcp`, tools }) + '\n');
}

await serve(await buildModern(), await buildLegacy());

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
if (opts['exit-on-stdin-eof']) {
    // The parent holds our stdin open; EOF means it went away.
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
}
