package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// knownActions are the actions a gateway asks the PDP about (besides the
// HTTP methods of HTTP routes).
var knownActions = []string{policy.ActionCallTool, policy.ActionListTools, policy.ActionReadResource, policy.ActionGetPrompt,
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

func (e *env) policyExplainCmd() *cobra.Command {
	var (
		principal, action, resource, context, decision string
		version                                        int64
		shadow, asJSON                                 bool
	)
	cmd := &cobra.Command{
		Use:   "explain --principal AGENT --action ACTION --resource ENTITY | --decision ID",
		Short: "Show how a request would be decided, and by which policies",
		Long: `Decide a request against the live version (or --version N, or --shadow)
without enforcing or recording it, and show the decision, the policies that
determined it, and any policy that failed to evaluate.

  bulkhead policy explain --principal alpha --action call_tool \
      --resource 'Tool::"files/read_file"' --context '{"input":{"path":"/etc/passwd"}}'

--principal is an agent name, an agent's SPIFFE ID or a Cedar entity
reference; --resource a Cedar entity reference. As the gateway does, the
context has risk 0 and tainted false unless --context says otherwise. An
agent that is not registered, or an action no gateway asks about, is
warned of: such a request is never decided.

--decision ID replays a recorded gateway decision (the id an agent is
given when it is refused) against the policy version it was made with and
against the live one, and says whether the outcome would change. The
arguments were recorded as a digest only: pass them with --context
'{"input":{...}}' when a rule reads context.input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			ctx := map[string]any{}
			if context != "" {
				if err := json.Unmarshal([]byte(context), &ctx); err != nil {
					return fmt.Errorf("--context must be a JSON object: %w", err)
				}
			}
			if decision != "" {
				if principal != "" || action != "" || resource != "" || version != 0 || shadow {
					return fmt.Errorf("--decision replays a recorded decision: give it alone (with --context for the arguments)")
				}
				return e.replayDecision(cmd.Context(), c, decision, ctx, context != "", asJSON)
			}
			if principal == "" || action == "" || resource == "" {
				return fmt.Errorf("--principal, --action and --resource are required (or --decision ID)")
			}
			subj, err := entityArg(principal, c.Source().ID().TrustDomain().Name(), true)
			if err != nil {
				return fmt.Errorf("--principal: %w", err)
			}
			res, err := entityArg(resource, "", false)
			if err != nil {
				return fmt.Errorf("--resource: %w", err)
			}
			req := api.PolicyExplainRequest{Subject: subj, Action: api.AuthZENAction{Name: action}, Resource: res, Version: version, Shadow: shadow}
			ex, err := explain(cmd.Context(), c, req, ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ex)
			}
			e.warnUnknown(cmd.Context(), c, subj, action)
			e.printExplanation(ex)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&principal, "principal", "", "agent name, SPIFFE ID or entity (Type::\"id\")")
	f.StringVar(&action, "action", "", "action: call_tool, list_tools, GET, ...")
	f.StringVar(&resource, "resource", "", "resource entity, e.g. Tool::\"docs/search\"")
	f.StringVar(&context, "context", "", "request context as JSON, e.g. {\"risk\":10,\"input\":{...}}")
	f.StringVar(&decision, "decision", "", "replay this recorded decision (its id) against its policy version and the live one")
	f.Int64Var(&version, "version", 0, "explain against this stored version (default: live)")
	f.BoolVar(&shadow, "shadow", false, "explain against the shadow candidate")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// explain decides req with ctx, filled as the gateway fills it: a policy
// reading risk or taint would otherwise fail (and deny) on every
// explanation.
func explain(ctx context.Context, c *client.Client, req api.PolicyExplainRequest, reqCtx map[string]any) (api.PolicyExplanation, error) {
	for k, v := range map[string]any{"risk": 0, "tainted": false} {
		if _, ok := reqCtx[k]; !ok {
			reqCtx[k] = v
		}
	}
	var err error
	if req.Context, err = json.Marshal(reqCtx); err != nil {
		return api.PolicyExplanation{}, err
	}
	return c.ExplainPolicy(ctx, req)
}

// warnUnknown warns about a principal that is not a registered agent and an
// action no gateway asks about: the explanation is then of a request that
// never happens.
func (e *env) warnUnknown(ctx context.Context, c *client.Client, subj api.AuthZENEntity, action string) {
	if !slices.Contains(knownActions, action) {
		fmt.Fprintf(e.stderr, "warning: no gateway asks about action %q (it asks about %s, and HTTP routes' methods)\n", action, strings.Join(knownActions[:4], ", "))
	}
	if subj.Type != "Agent" {
		return
	}
	prefix := "spiffe://" + c.Source().ID().TrustDomain().Name() + "/agent/"
	name, ok := strings.CutPrefix(subj.ID, prefix)
	if !ok {
		fmt.Fprintf(e.stderr, "warning: %s is not an agent of this trust domain\n", subj.ID)
		return
	}
	if _, err := c.GetAgent(ctx, strings.SplitN(name, "/", 2)[0]); client.IsCode(err, "not_found") {
		fmt.Fprintf(e.stderr, "warning: no agent %q is registered: it is decided as an agent without roles\n", name)
	}
}

// replayDecision decides a recorded gateway decision again with the policy
// version it was made with and with the live one.
func (e *env) replayDecision(ctx context.Context, c *client.Client, id string, input map[string]any, hasInput, asJSON bool) error {
	var evs []audit.Event
	if err := apiGetJSON(ctx, c, e.server, "/v1/audit/events", url.Values{"decision_id": {id}}, &evs); err != nil {
		return err
	}
	var rec *audit.Event
	for i := range evs {
		if strings.HasPrefix(evs[i].Action, "gateway.") && evs[i].Detail["policy_version"] != "" {
			rec = &evs[i]
			break
		}
	}
	if rec == nil {
		return fmt.Errorf("no gateway decision %s in the audit log ('bulkhead audit search --decision-id %s' shows what there is)", id, id)
	}
	res, err := entityArg(rec.Target, "", false)
	if err != nil {
		return fmt.Errorf("decision %s: its resource: %w", id, err)
	}
	recorded, _ := strconv.ParseInt(rec.Detail["policy_version"], 10, 64)
	// The context the gateway decided with, as far as it was recorded.
	input["tainted"] = rec.Detail["tainted"] == "true"
	if rec.Task != "" && rec.Detail["task_open"] == "true" {
		input["task"] = rec.Task
		if m := rec.Detail["manifest"]; m != "" {
			input["manifest"] = m
		}
		if g := rec.Detail["grants"]; g != "" {
			input["grants"] = strings.Fields(g)
		}
	}
	req := api.PolicyExplainRequest{Subject: api.AuthZENEntity{Type: "Agent", ID: rec.Actor.ID},
		Action: api.AuthZENAction{Name: strings.TrimPrefix(rec.Action, "gateway.")}, Resource: res}
	var out struct {
		Recorded audit.Event           `json:"recorded"`
		Then     api.PolicyExplanation `json:"then"`
		Now      api.PolicyExplanation `json:"now"`
		Changed  bool                  `json:"changed"`
	}
	out.Recorded = *rec
	req.Version = recorded
	if out.Then, err = explain(ctx, c, req, input); err != nil {
		return fmt.Errorf("replay with version %d: %w", recorded, err)
	}
	req.Version = 0
	if out.Now, err = explain(ctx, c, req, input); err != nil {
		return fmt.Errorf("replay with the live version: %w", err)
	}
	out.Changed = out.Then.Decision != out.Now.Decision
	if asJSON {
		return printJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "recorded:   %s #%d %s, %s by %s on %s (policy version %d)\n", id, rec.Seq, fmtTime(rec.Time),
		strings.ToUpper(string(rec.Decision)), rec.Actor.ID, rec.Target, recorded)
	if !hasInput && rec.Digests["arguments"] != "" {
		fmt.Fprintf(e.stderr, "warning: the arguments were recorded as a digest only (%s): rules reading context.input are decided without them; pass them with --context '{\"input\":{...}}'\n", rec.Digests["arguments"])
	}
	fmt.Fprintf(e.stdout, "\n== replayed with version %d (the one it was made with)\n", recorded)
	e.printExplanation(out.Then)
	fmt.Fprintf(e.stdout, "\n== replayed with the live version %d\n", out.Now.Version)
	e.printExplanation(out.Now)
	if out.Changed {
		fmt.Fprintf(e.stdout, "\nthe outcome changed: %s then, %s now\n", strings.ToUpper(out.Then.Decision), strings.ToUpper(out.Now.Decision))
	} else {
		fmt.Fprintf(e.stdout, "\nthe outcome is the same: %s\n", strings.ToUpper(out.Now.Decision))
	}
	return nil
}
