package assess

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
)

// criteria judges one surface's criteria, tier by tier (the ladder's
// table, Zero Trust for AI Agents part III).
func criteria(ev *evidence, surface string) []api.AssessCriterion {
	mk := func(tier, name string, blockers []string, evidence string) api.AssessCriterion {
		return api.AssessCriterion{Surface: surface, Tier: tier, Name: name, Met: len(blockers) == 0, Evidence: evidence, Blockers: blockers}
	}
	switch surface {
	case Identity:
		return []api.AssessCriterion{
			mk(api.TierFoundation, "cryptographically-rooted per-agent IDs in all logs", ev.unattributed(), ev.attributionEvidence()),
			mk(api.TierEnterprise, "X.509-SVIDs of at most 1 h", ev.longSVIDs(), fmt.Sprintf("%d active agents, SVID TTLs checked against %s", len(ev.active()), MaxSVIDTTL)),
			mk(api.TierEnterprise, "rotation observed in the log", ev.unrotated(), fmt.Sprintf("%d renewals recorded", sumValues(ev.renewed))),
			mk(api.TierEnterprise, "revocation in use", nil, fmt.Sprintf("a CRL at /v1/crl and revocations on /v1/events reach every gateway; %d revocations recorded", ev.revoked)),
			mk(api.TierAdvanced, "hardware-backed keys with attested issuance", []string{"no agent key is hardware-backed (TPM/HSM) and no issuance was attested"}, "no attestation recorded"),
		}
	case ServiceAuth:
		return []api.AssessCriterion{
			mk(api.TierFoundation, "short-lived tokens (minutes)", ev.longTokens(), fmt.Sprintf("access tokens live %s, bound to the caller's SVID (RFC 8705)", ev.tokenTTL)),
			mk(api.TierEnterprise, "mutual TLS with certificate pinning", ev.noGateways(), fmt.Sprintf("%d gateways reported; each requires a client SVID and a token bound to it, and pins the trust domain's root", len(ev.gateways))),
			mk(api.TierAdvanced, "hardware-bound credentials, attested issuance", []string{"no credential is hardware-bound"}, "no attestation recorded"),
		}
	case Permission:
		return []api.AssessCriterion{
			mk(api.TierFoundation, "RBAC and deny by default", ev.permitAll(), fmt.Sprintf("live policy version %d with %d policies; what no permit allows is denied", ev.frozen.Version(), len(ev.policies))),
			mk(api.TierEnterprise, "ABAC: context-aware policies", ev.noABAC(), fmt.Sprintf("%d policies read the resource's attributes or the request's context (time alone does not count)", len(ev.contextAware()))),
			mk(api.TierAdvanced, "continuous authorization per action", ev.notContinuous(), fmt.Sprintf("%d recent per-call decisions; %d policies read taint or risk", len(ev.decisions), len(ev.liveSignals()))),
		}
	case Privilege:
		return []api.AssessCriterion{
			mk(api.TierFoundation, "static least-privilege roles", ev.superusers(), fmt.Sprintf("%d agents' blast radius computed over %d resources", len(ev.fleet.Agents), len(ev.resources))),
			mk(api.TierEnterprise, "dynamic elevation per task, return to baseline", ev.noElevation(), fmt.Sprintf("%d manifests, %d escalation triggers", len(ev.manifests), ev.triggers())),
			mk(api.TierEnterprise, "no standing elevated access", ev.standingGrants(), fmt.Sprintf("%d grants in force outside an open task (%d inside)", ev.standing.Standing, ev.standing.Active)),
			mk(api.TierEnterprise, "high-sensitivity writes only through elevation", ev.baselineHighWrites(), "baseline reach of every agent checked for high-sensitivity writes"),
			mk(api.TierAdvanced, "JIT/JEA: grants bounded in uses and time", ev.unboundedTriggers(), "every trigger's grant expires; JEA bounds its uses"),
		}
	case Isolation:
		return []api.AssessCriterion{
			mk(api.TierFoundation, "only named callers reach each tool server", append(ev.noGateways(), ev.openServers()...), fmt.Sprintf("%d servers across %d gateways", ev.servers(), len(ev.gateways))),
			mk(api.TierEnterprise, "sandboxed execution of tool servers", append(ev.noGateways(), ev.unsandboxed()...), ev.sandboxEvidence()),
			mk(api.TierAdvanced, "hardware isolation (microVMs, SEV/TDX)", []string{"no tool server runs in a microVM or confidential VM"}, "sandboxes share the host kernel"),
		}
	}
	return nil
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (ev *evidence) attributionEvidence() string {
	return fmt.Sprintf("%d most recent gateway decisions checked", len(ev.decisions))
}

// unattributed are recent decisions not attributed to an agent's SPIFFE
// ID. A refusal a gateway records as itself (a sandboxed process asked
// for egress while no agent's session owned it) let nothing happen and
// had no agent to name: it does not count.
func (ev *evidence) unattributed() []string {
	var out []string
	for _, e := range ev.decisions {
		if e.Actor.Kind == audit.ActorWorkload && e.Decision == audit.Deny {
			continue
		}
		if e.Actor.Kind != audit.ActorAgent || !strings.HasPrefix(e.Actor.ID, "spiffe://") {
			out = append(out, fmt.Sprintf("decision %d (%s on %s) names no agent", e.Seq, e.Action, e.Target))
		}
	}
	return capList(out)
}

func (ev *evidence) longSVIDs() []string {
	var out []string
	for _, a := range ev.active() {
		if a.SVIDTTL > MaxSVIDTTL {
			out = append(out, fmt.Sprintf("agent %s: SVID TTL %s (bulkhead agent create --ttl, at most %s)", a.Name, a.SVIDTTL, MaxSVIDTTL))
		}
	}
	return out
}

// unrotated are active agents enrolled more than one TTL ago that never
// renewed: their SVIDs expired unrotated, or the log misses renewals.
func (ev *evidence) unrotated() []string {
	var out []string
	for _, a := range ev.active() {
		first, ok := ev.issued[a.SPIFFEID]
		if !ok || ev.at.Sub(first) < a.SVIDTTL || ev.renewed[a.SPIFFEID] > 0 {
			continue
		}
		out = append(out, fmt.Sprintf("agent %s: enrolled %s, never renewed (run it under bulkhead connect or client.Rotator)", a.Name, first.UTC().Format("2006-01-02T15:04Z")))
	}
	return out
}

func (ev *evidence) longTokens() []string {
	if ev.tokenTTL <= 0 || ev.tokenTTL > MaxTokenTTL {
		return []string{fmt.Sprintf("access tokens live %s (serve --token-ttl, at most %s)", ev.tokenTTL, MaxTokenTTL)}
	}
	return nil
}

func (ev *evidence) noGateways() []string {
	if len(ev.gateways) == 0 {
		return []string{"no gateway has reported what it serves (gateways record gateway.start when they start)"}
	}
	return nil
}

// isUnconditional says a policy has no when/unless clause.
func isUnconditional(p policy.PolicyInfo) bool {
	return !strings.Contains(p.Text, "when") && !strings.Contains(p.Text, "unless")
}

// permitAll are permits that allow everything to everyone: they undo
// deny by default.
func (ev *evidence) permitAll() []string {
	var out []string
	if len(ev.policies) == 0 {
		out = append(out, "no policy is live (bulkhead policy apply): nothing is allowed, and no role means anything")
	}
	for _, p := range ev.policies {
		head := strings.Join(strings.Fields(p.Text), " ")
		if p.Effect == "permit" && isUnconditional(p) && strings.Contains(head, "permit ( principal, action, resource )") {
			out = append(out, fmt.Sprintf("policy %s (%s:%d) permits every action on every resource to every principal", p.ID, p.File, p.Line))
		}
	}
	return out
}

// contextAware are policies whose conditions read the request's context
// or the resource's attributes — other than the time alone, which only
// throttles.
func (ev *evidence) contextAware() []policy.PolicyInfo {
	var out []policy.PolicyInfo
	for _, p := range ev.policies {
		if isUnconditional(p) {
			continue
		}
		cond := conditionText(p.Text)
		if strings.Contains(cond, "resource.") || strings.Contains(strings.ReplaceAll(cond, "context.time", ""), "context.") {
			out = append(out, p)
		}
	}
	return out
}

func (ev *evidence) noABAC() []string {
	if len(ev.contextAware()) == 0 {
		return []string{"no policy reads the resource's sensitivity or effects or the request's context: add guardrails such as examples/policies/live/guardrails.cedar"}
	}
	return nil
}

// liveSignals are policies that read the session's taint or risk: what
// makes a per-call decision change as the session goes on.
func (ev *evidence) liveSignals() []policy.PolicyInfo {
	var out []policy.PolicyInfo
	for _, p := range ev.policies {
		if c := conditionText(p.Text); strings.Contains(c, "context.tainted") || strings.Contains(c, "context.risk") {
			out = append(out, p)
		}
	}
	return out
}

func (ev *evidence) notContinuous() []string {
	var out []string
	if len(ev.decisions) == 0 {
		out = append(out, "no per-call decision is recorded yet: no agent has called a tool through a gateway")
	}
	if len(ev.liveSignals()) == 0 {
		out = append(out, "no policy reads context.tainted or context.risk: a decision does not change as a session reads untrusted input")
	}
	return out
}

// superusers are agents whose baseline reaches every resource of a
// catalog that has more than one.
func (ev *evidence) superusers() []string {
	var out []string
	total := 0
	for _, r := range ev.resources {
		total += len(reach.Actions(r.UID.Type))
	}
	if total < 2 {
		return nil
	}
	for _, r := range ev.fleet.Agents {
		if r.Count(reach.ViaBaseline) == total {
			out = append(out, fmt.Sprintf("agent %s reaches all %d actions of the catalog at baseline", r.Agent, total))
		}
	}
	return out
}

func (ev *evidence) triggers() int {
	n := 0
	for _, m := range ev.manifests {
		n += len(m.EscalationTriggers)
	}
	return n
}

func (ev *evidence) noElevation() []string {
	if ev.triggers() == 0 {
		return []string{"no manifest declares an escalation trigger (bulkhead manifest apply): every privilege is standing"}
	}
	return nil
}

func (ev *evidence) standingGrants() []string {
	if ev.standing.Standing > 0 {
		return []string{fmt.Sprintf("%d grants are in force outside an open task", ev.standing.Standing)}
	}
	return nil
}

func (ev *evidence) baselineHighWrites() []string {
	var out []string
	for _, r := range ev.fleet.Agents {
		for _, it := range r.Items {
			if it.Sensitivity == policy.SensitivityHigh && it.Effects != policy.EffectsRead && it.Ways[0].Via == reach.ViaBaseline {
				out = append(out, fmt.Sprintf("agent %s: %s %s at baseline (allowed by %s); move it behind an escalation trigger",
					r.Agent, it.Action, it.Resource, strings.Join(it.Ways[0].Policies, ", ")))
			}
		}
	}
	return capList(out)
}

func (ev *evidence) unboundedTriggers() []string {
	var out []string
	for _, m := range ev.manifests {
		for _, t := range m.EscalationTriggers {
			if t.MaxUses == 0 {
				out = append(out, fmt.Sprintf("manifest %s, trigger %s: no max_uses, so a grant allows any number of calls until it expires", m.Name, t.Name))
			}
		}
	}
	if ev.triggers() == 0 {
		out = append(out, "no escalation trigger to bound")
	}
	return out
}

func (ev *evidence) gatewayNames() []string {
	names := make([]string, 0, len(ev.gateways))
	for n := range ev.gateways {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (ev *evidence) servers() int {
	n := 0
	for _, g := range ev.gateways {
		n += len(g.Servers)
	}
	return n
}

// openServers are servers any caller may reach.
func (ev *evidence) openServers() []string {
	var out []string
	for _, name := range ev.gatewayNames() {
		for _, s := range ev.gateways[name].Servers {
			if len(s.Callers) == 0 || slices.Contains(s.Callers, "*") {
				out = append(out, fmt.Sprintf("gateway %s, server %s: callers %v do not name who may call", name, s.Name, s.Callers))
			}
		}
	}
	return out
}

// unsandboxed are stdio servers a gateway runs without a sandbox.
func (ev *evidence) unsandboxed() []string {
	var out []string
	for _, name := range ev.gatewayNames() {
		for _, s := range ev.gateways[name].Servers {
			if s.Transport == "mcp-stdio" && s.Sandbox == "none" {
				out = append(out, fmt.Sprintf("gateway %s, server %s: sandbox: none", name, s.Name))
			}
		}
	}
	return out
}

func (ev *evidence) sandboxEvidence() string {
	stdio, remote := 0, 0
	for _, g := range ev.gateways {
		for _, s := range g.Servers {
			if s.Transport == "mcp-stdio" {
				stdio++
			} else {
				remote++
			}
		}
	}
	return fmt.Sprintf("%d stdio servers run by gateways, each checked for a sandbox; %d servers run elsewhere, whose isolation is their host's", stdio, remote)
}

// conditionText is a policy's text from its first when/unless clause.
func conditionText(text string) string {
	for _, kw := range []string{"when", "unless"} {
		if i := strings.Index(text, kw); i >= 0 {
			return text[i:]
		}
	}
	return ""
}

// capList keeps a list of blockers readable.
func capList(list []string) []string {
	const most = 20
	if len(list) <= most {
		return list
	}
	return append(list[:most:most], fmt.Sprintf("and %d more", len(list)-most))
}

// lint reports controls that only throttle.
func lint(ev *evidence) []string {
	var out []string
	for _, p := range ev.policies {
		c := conditionText(p.Text)
		if p.Effect == "forbid" && strings.Contains(c, "context.time") {
			out = append(out, fmt.Sprintf("policy %s (%s:%d) forbids by time: an attacker waits it out; it counts toward no tier", p.ID, p.File, p.Line))
		}
	}
	timed := map[string]bool{}
	for _, r := range ev.fleet.Agents {
		for _, it := range r.Items {
			if it.Ways[0].Via == reach.ViaTime {
				timed[it.Key()] = true
			}
		}
	}
	if len(timed) > 0 {
		keys := make([]string, 0, len(timed))
		for k := range timed {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out = append(out, fmt.Sprintf("%d actions are denied now but reachable later the same week: %s", len(keys), strings.Join(capList(keys), "; ")))
	}
	for _, name := range ev.gatewayNames() {
		for _, s := range ev.gateways[name].Servers {
			if s.RatePerSecond > 0 && s.BudgetCalls == 0 && s.BudgetBytes == 0 {
				out = append(out, fmt.Sprintf("gateway %s, server %s: a rate limit without a budget only slows exfiltration; add budget: (never refilled)", name, s.Name))
			}
		}
	}
	return out
}
