// Package policy is Bulkhead's policy decision point (PDP): every action an
// agent takes (an MCP tool call, a resource read, an HTTP request) is a
// Cedar request, decided here against an operator's policies.
//
// The model is fixed by a Cedar schema that ships with Bulkhead (see
// BaseSchema) and that operators extend: principals are Agents (id: their
// SPIFFE ID; parents: Roles, or for a sub-agent the agent that spawned it),
// resources are Tools ("SERVER/TOOL", in a ToolServer and ToolGroups) and
// Routes, actions are call_tool, list_tools, read_resource, get_prompt and
// the HTTP methods, grouped as read, write, mcp and http. The context
// carries the task, a risk score, taint, the time, the elevations in force
// and the tool call's arguments, so policy can constrain arguments:
//
//	forbid (principal, action == Action::"call_tool", resource)
//	when { context.input has path && context.input.path like "/etc/*" };
//
// Decisions deny by default, let forbid override permit, and deny if any
// policy fails to evaluate. Each decision names the policies that made it
// and the policy version used.
//
// Policy sets are stored as numbered versions (Service.Apply), validated
// against the schema before anything changes. The PDP keeps the live set,
// and optionally a shadow set evaluated beside it on every real request
// with differences recorded, and picks up changes made by any replica by
// polling one generation number.
//
// Evaluation is indexed: policies are filed by the entities and types in
// their principal, action and resource scopes, so a request evaluates only
// the few policies that can apply to it rather than the whole set, with
// results identical to cedar-go's (see the differential test).
package policy
