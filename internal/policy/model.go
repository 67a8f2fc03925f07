package policy

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Entity types of the shipped schema. Operators' policies and AuthZEN callers
// depend on these exact names.
const (
	TypeAgent      cedar.EntityType = "Agent"
	TypeRole       cedar.EntityType = "Role"
	TypeToolGroup  cedar.EntityType = "ToolGroup"
	TypeToolServer cedar.EntityType = "ToolServer"
	TypeTool       cedar.EntityType = "Tool"
	TypeRoute      cedar.EntityType = "Route"
	TypeTask       cedar.EntityType = "Task"
	TypeHost       cedar.EntityType = "Host"
	TypeAction     cedar.EntityType = "Action"
)

// Actions of the shipped schema.
const (
	ActionCallTool     = "call_tool"
	ActionListTools    = "list_tools"
	ActionReadResource = "read_resource"
	ActionGetPrompt    = "get_prompt"
	ActionConnect      = "connect"
)

// managed are the entity types whose entities Bulkhead's store defines; a
// request may not supply or alter them.
var managed = map[cedar.EntityType]bool{
	TypeAgent: true, TypeRole: true, TypeToolGroup: true, TypeToolServer: true,
	TypeTool: true, TypeRoute: true, TypeTask: true, TypeAction: true, TypeHost: true,
}

// Action returns the UID of a Bulkhead action, e.g. Action("call_tool").
func Action(name string) cedar.EntityUID { return cedar.NewEntityUID(TypeAction, cedar.String(name)) }

// Agent returns the UID of the agent with SPIFFE ID id.
func Agent(id spiffeid.ID) cedar.EntityUID {
	return cedar.NewEntityUID(TypeAgent, cedar.String(id.String()))
}

// Tool returns the UID of a tool: Tool::"SERVER/TOOL".
func Tool(server, tool string) cedar.EntityUID {
	return cedar.NewEntityUID(TypeTool, cedar.String(server+"/"+tool))
}

// Route returns the UID of an HTTP route: Route::"SERVER/ROUTE".
func Route(server, route string) cedar.EntityUID {
	return cedar.NewEntityUID(TypeRoute, cedar.String(server+"/"+route))
}

// ToolServer returns the UID of a server.
func ToolServer(name string) cedar.EntityUID {
	return cedar.NewEntityUID(TypeToolServer, cedar.String(name))
}

// Host returns the UID of a network destination of a server:
// Host::"SERVER/HOST:PORT".
func Host(server, hostPort string) cedar.EntityUID {
	return cedar.NewEntityUID(TypeHost, cedar.String(server+"/"+hostPort))
}

// Role returns the UID of a role.
func Role(name string) cedar.EntityUID { return cedar.NewEntityUID(TypeRole, cedar.String(name)) }

// ToolGroup returns the UID of a tool group.
func ToolGroup(name string) cedar.EntityUID {
	return cedar.NewEntityUID(TypeToolGroup, cedar.String(name))
}

// Names of roles, servers, tools and groups: short, and free of the "/" that
// separates a server from its tool.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidateName checks the name of a role, server, tool, route or group; what
// says which, for the message.
func ValidateName(what, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s name %q must be 1-63 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit", fault.Invalid, what, name)
	}
	return nil
}

// agentPath is a parsed agent SPIFFE ID: a registered agent, or a sub-agent
// /agent/PARENT/sub/ID (recursively).
type agentPath struct {
	id    spiffeid.ID
	chain []spiffeid.ID // ancestors, parent first, ending at the registered agent
	name  string        // path below /agent/
}

// parseAgentID parses an Agent entity id. It reports false for anything that
// is not an agent's SPIFFE ID.
func parseAgentID(s string) (agentPath, bool) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return agentPath{}, false
	}
	name, ok := strings.CutPrefix(id.Path(), "/agent/")
	if !ok || name == "" {
		return agentPath{}, false
	}
	segs := strings.Split(name, "/")
	// A registered agent is one segment; each sub-agent adds "sub/ID".
	if len(segs)%2 != 1 {
		return agentPath{}, false
	}
	for i, s := range segs {
		if i%2 == 1 && s != "sub" || s == "" {
			return agentPath{}, false
		}
	}
	p := agentPath{id: id, name: name}
	for n := len(segs) - 2; n >= 1; n -= 2 {
		parent, err := spiffeid.FromSegments(id.TrustDomain(), append([]string{"agent"}, segs[:n]...)...)
		if err != nil {
			return agentPath{}, false
		}
		p.chain = append(p.chain, parent)
	}
	return p, true
}

// parseEntityUID parses a Cedar entity literal such as Tool::"docs/search".
func parseEntityUID(s string) (cedar.EntityUID, error) {
	var uid cedar.EntityUID
	if err := uid.UnmarshalCedar([]byte(s)); err != nil {
		return uid, fmt.Errorf("%w: %q is not a Cedar entity reference like Tool::\"docs/search\"", fault.Invalid, s)
	}
	return uid, nil
}

// newEntityType checks a type name from outside (AuthZEN, test files).
func newEntityType(s string) (cedar.EntityType, error) {
	t, err := types.NewEntityType(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a Cedar entity type name", fault.Invalid, s)
	}
	return t, nil
}
