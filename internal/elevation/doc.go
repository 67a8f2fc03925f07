// Package elevation is Bulkhead's privilege scoping: task manifests, tasks,
// elevation requests, approvals and grants.
//
// Agents run at baseline: what their roles allow. A task manifest, one per
// kind of task, holds the four items of a blast-radius assessment:
// approved actions (the task's baseline), prohibited actions (never),
// escalation triggers (elevations the task may ask for: what each grants,
// for how long, how many uses, who approves) and scope limits (budgets).
// Applying a manifest compiles it to a managed Cedar policy set that every
// PDP evaluates beside the operator's policies for requests made in a task
// of that manifest (see Compile and policy.ManagedSet).
//
// An agent opens a task against a manifest; the task id flows into its
// tokens and into every decision as context.task, with context.manifest,
// context.tainted and context.grants from the task's live state. The
// agent may request one of its manifest's triggers with a justification;
// the request is approved by the approval policy set (a separate Cedar
// policy set; see approval.go) or by humans, never by an agent, and the
// grant is in force at once, bounded by the trigger's duration and uses and
// by the task. Completing, cancelling or timing out the task ends every
// grant of it in the same transaction: the agent is back at baseline.
// Standing privilege is zero by construction: no grant exists outside an
// open task, and StandingGrants measures it.
//
// Every request, approval, denial, grant, use, expiry and return to
// baseline is recorded in the audit log, with who did it and why, before
// it takes effect; if the record, the store or the approval policy fails,
// nothing is granted.
package elevation
