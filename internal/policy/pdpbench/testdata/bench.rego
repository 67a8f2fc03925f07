# The Rego equivalent of the benchmark's Cedar policies, data-driven as OPA
# users write it: the per-agent grants and the tool catalog are data, the
# policy is three rules.
#
#   permit (principal == Agent::"A", action == Action::"call_tool", resource in ToolServer::"S")
#   when { context.risk < 80 };                               -- one per agent: data.grants[A]
#   forbid (principal, action, resource) when { resource.sensitivity == "high" };
#   forbid (principal, action == Action::"call_tool", resource)
#   when { context.input has path && context.input.path like "/etc/*" };
package bulkhead

default allow := false

allow if {
	permit
	not deny
}

permit if {
	some g in data.grants[input.subject]
	g.action == input.action
	g.server == data.tools[input.resource].server
	input.context.risk < g.max_risk
}

deny if data.tools[input.resource].sensitivity == "high"

deny if {
	input.action == "call_tool"
	startswith(input.context.input.path, "/etc/")
}
