package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"go.yaml.in/yaml/v3"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Catalog describes the servers agents can reach and their tools and HTTP
// routes: the resources of policy. Operators keep it in a file and apply it
// whole ('bulkhead tool apply -f FILE').
//
//	servers:
//	  - name: docs
//	    sensitivity: low
//	    untrusted_output: false
//	    groups: [docs]
//	    tools:
//	      - name: search
//	      - name: delete_page
//	        sensitivity: high
type Catalog struct {
	Servers []Server `json:"servers" yaml:"servers"`
}

// Server is a tool server (MCP server or HTTP API).
type Server struct {
	Name        string `json:"name" yaml:"name"`
	Description string `json:"description,omitempty" yaml:"description,omitempty"`
	// Sensitivity is low, medium or high; tools inherit it. Default medium.
	Sensitivity string `json:"sensitivity,omitempty" yaml:"sensitivity,omitempty"`
	// UntrustedOutput says what the server returns may carry injected
	// instructions; tools inherit it. Default true: trust is declared, never
	// assumed.
	UntrustedOutput *bool       `json:"untrusted_output,omitempty" yaml:"untrusted_output,omitempty"`
	Groups          []string    `json:"groups,omitempty" yaml:"groups,omitempty"`
	Tools           []ToolEntry `json:"tools,omitempty" yaml:"tools,omitempty"`
	Routes          []ToolEntry `json:"routes,omitempty" yaml:"routes,omitempty"`
	// Hosts are the network destinations ("host:port") the server's
	// sandboxed process may ask the gateway's egress proxy for:
	// Host::"SERVER/host:port", in the server, decided as
	// Action::"connect".
	Hosts []ToolEntry `json:"hosts,omitempty" yaml:"hosts,omitempty"`
}

// ToolEntry is a tool (MCP) or a route (HTTP) of a server. Unset
// sensitivity and untrusted_output are the server's.
type ToolEntry struct {
	Name            string   `json:"name" yaml:"name"`
	Description     string   `json:"description,omitempty" yaml:"description,omitempty"`
	Sensitivity     string   `json:"sensitivity,omitempty" yaml:"sensitivity,omitempty"`
	UntrustedOutput *bool    `json:"untrusted_output,omitempty" yaml:"untrusted_output,omitempty"`
	Groups          []string `json:"groups,omitempty" yaml:"groups,omitempty"`
	// Method and Path describe a route; they are informational.
	Method string `json:"method,omitempty" yaml:"method,omitempty"`
	Path   string `json:"path,omitempty" yaml:"path,omitempty"`
	// PathArgs names a tool's arguments that are paths (a string or a
	// list of strings). A call whose path argument is not canonical
	// (canonpath.Arg: no "..", "//", backslash, encoded dot or slash,
	// Unicode look-alikes, ...) is denied before any policy is evaluated,
	// so a policy on "/srv/docs/*" means what it says.
	PathArgs []string `json:"path_args,omitempty" yaml:"path_args,omitempty"`
	// Effects is what calling it does: "read" (nothing outside the call
	// changes) or "write" (the default: effects are declared absent, never
	// assumed absent). It comes from the operator, never from a server's
	// own annotations. The gateway writes the decision record of a read
	// while the call is forwarded, and releases the answer only once the
	// record is durable; a write is forwarded only after its record is.
	Effects string `json:"effects,omitempty" yaml:"effects,omitempty"`
}

// Effects of a tool or route.
const (
	EffectsRead  = "read"
	EffectsWrite = "write"
)

// Sensitivity levels.
const (
	SensitivityLow    = "low"
	SensitivityMedium = "medium"
	SensitivityHigh   = "high"
)

// Limits on a catalog.
const (
	MaxCatalogBytes   = 8 << 20
	maxCatalogEntries = 100_000
)

// ParseCatalog parses and normalizes a catalog file (YAML, or JSON, which
// is YAML). name is used in messages.
func ParseCatalog(name string, b []byte) (Catalog, error) {
	if len(b) > MaxCatalogBytes {
		return Catalog{}, fmt.Errorf("%w: %s is over %d bytes", fault.Invalid, name, MaxCatalogBytes)
	}
	var c Catalog
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Catalog{}, fmt.Errorf("%w: %s: %w", fault.Invalid, name, err)
	}
	if err := c.Normalize(); err != nil {
		return Catalog{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// Normalize checks the catalog and fills defaults, so the stored catalog
// says explicitly what every tool's attributes are.
func (c *Catalog) Normalize() error {
	seen := map[string]bool{}
	n := 0
	for i := range c.Servers {
		s := &c.Servers[i]
		if err := ValidateName("server", s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("%w: server %q is described twice", fault.Invalid, s.Name)
		}
		seen[s.Name] = true
		if s.Sensitivity == "" {
			s.Sensitivity = SensitivityMedium
		}
		if s.UntrustedOutput == nil {
			s.UntrustedOutput = ptr(true)
		}
		if err := checkEntry("server "+s.Name, s.Sensitivity, s.Groups); err != nil {
			return err
		}
		for _, list := range []struct {
			kind    string
			entries []ToolEntry
		}{{"tool", s.Tools}, {"route", s.Routes}, {"host", s.Hosts}} {
			names := map[string]bool{}
			for j := range list.entries {
				t := &list.entries[j]
				n++
				validate := ValidateName
				if list.kind == "host" {
					validate = validateHost
				}
				if err := validate(list.kind, t.Name); err != nil {
					return fmt.Errorf("server %s: %w", s.Name, err)
				}
				if names[t.Name] {
					return fmt.Errorf("%w: server %s: %s %q is described twice", fault.Invalid, s.Name, list.kind, t.Name)
				}
				names[t.Name] = true
				if t.Sensitivity == "" {
					t.Sensitivity = s.Sensitivity
				}
				if t.UntrustedOutput == nil {
					t.UntrustedOutput = ptr(*s.UntrustedOutput)
				}
				if err := checkEntry(fmt.Sprintf("%s %s/%s", list.kind, s.Name, t.Name), t.Sensitivity, t.Groups); err != nil {
					return err
				}
				switch t.Effects {
				case "":
					t.Effects = EffectsWrite
				case EffectsRead, EffectsWrite:
				default:
					return fmt.Errorf("%w: %s %s/%s: effects %q must be read or write", fault.Invalid, list.kind, s.Name, t.Name, t.Effects)
				}
				if err := checkPathArgs(list.kind, t); err != nil {
					return fmt.Errorf("server %s: %w", s.Name, err)
				}
				if len(t.Method) > 16 || len(t.Path) > 1024 || len(t.Description) > 4096 {
					return fmt.Errorf("%w: %s %s/%s: method, path or description too long", fault.Invalid, list.kind, s.Name, t.Name)
				}
			}
		}
		if len(s.Description) > 4096 {
			return fmt.Errorf("%w: server %s: description too long", fault.Invalid, s.Name)
		}
	}
	// Stored and listed by name, whatever order the file used.
	byName := func(a, b ToolEntry) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(c.Servers, func(a, b Server) int { return strings.Compare(a.Name, b.Name) })
	for i := range c.Servers {
		slices.SortFunc(c.Servers[i].Tools, byName)
		slices.SortFunc(c.Servers[i].Routes, byName)
		slices.SortFunc(c.Servers[i].Hosts, byName)
	}
	if n+len(c.Servers) > maxCatalogEntries {
		return fmt.Errorf("%w: a catalog is limited to %d servers, tools and routes", fault.Invalid, maxCatalogEntries)
	}
	return nil
}

func checkEntry(what, sensitivity string, groups []string) error {
	switch sensitivity {
	case SensitivityLow, SensitivityMedium, SensitivityHigh:
	default:
		return fmt.Errorf("%w: %s: sensitivity %q must be low, medium or high", fault.Invalid, what, sensitivity)
	}
	for _, g := range groups {
		if err := ValidateName("group", g); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if len(groups) > 64 {
		return fmt.Errorf("%w: %s: too many groups", fault.Invalid, what)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// entities returns the Cedar entities a normalized catalog defines.
func (c Catalog) entities() []cedar.Entity {
	var out []cedar.Entity
	groups := map[string]bool{}
	groupUIDs := func(gs []string) []cedar.EntityUID {
		out := make([]cedar.EntityUID, 0, len(gs))
		for _, g := range gs {
			groups[g] = true
			out = append(out, ToolGroup(g))
		}
		return out
	}
	for _, s := range c.Servers {
		srv := ToolServer(s.Name)
		out = append(out, cedar.Entity{UID: srv, Parents: cedar.NewEntityUIDSet(groupUIDs(s.Groups)...),
			Attributes: cedar.NewRecord(cedar.RecordMap{
				"name":             cedar.String(s.Name),
				"sensitivity":      cedar.String(s.Sensitivity),
				"untrusted_output": cedar.Boolean(untrusted(s.UntrustedOutput)),
			})})
		for _, list := range []struct {
			uid     func(string, string) cedar.EntityUID
			entries []ToolEntry
		}{{Tool, s.Tools}, {Route, s.Routes}, {Host, s.Hosts}} {
			for _, t := range list.entries {
				out = append(out, cedar.Entity{UID: list.uid(s.Name, t.Name),
					Parents: cedar.NewEntityUIDSet(append(groupUIDs(t.Groups), srv)...),
					Attributes: cedar.NewRecord(cedar.RecordMap{
						"name":             cedar.String(t.Name),
						"server":           srv,
						"sensitivity":      cedar.String(t.Sensitivity),
						"untrusted_output": cedar.Boolean(untrusted(t.UntrustedOutput)),
						"effects":          cedar.String(t.Effects),
					})})
			}
		}
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	slices.Sort(names)
	for _, g := range names {
		out = append(out, cedar.Entity{UID: ToolGroup(g)})
	}
	return out
}

// PathArgsReason begins the reason of a decision denied because a path
// argument is not canonical.
const PathArgsReason = "bulkhead/path_args"

// maxPathArgs bounds a tool's path_args.
const maxPathArgs = 32

func checkPathArgs(kind string, t *ToolEntry) error {
	if len(t.PathArgs) == 0 {
		return nil
	}
	if kind != "tool" {
		return fmt.Errorf("%w: route %q: path_args is for tools (routes' paths are always canonical)", fault.Invalid, t.Name)
	}
	if len(t.PathArgs) > maxPathArgs {
		return fmt.Errorf("%w: tool %q: more than %d path_args", fault.Invalid, t.Name, maxPathArgs)
	}
	seen := map[string]bool{}
	for _, a := range t.PathArgs {
		if a == "" || len(a) > 128 || seen[a] {
			return fmt.Errorf("%w: tool %q: path_args %q is empty, too long or repeated", fault.Invalid, t.Name, a)
		}
		seen[a] = true
	}
	return nil
}

// pathArgs maps each tool with path_args to them.
func (c Catalog) pathArgs() map[cedar.EntityUID][]string {
	out := map[cedar.EntityUID][]string{}
	for _, s := range c.Servers {
		for _, t := range s.Tools {
			if len(t.PathArgs) > 0 {
				out[Tool(s.Name, t.Name)] = t.PathArgs
			}
		}
	}
	return out
}

// readOnly returns the tools and routes declared effects: read.
func (c Catalog) readOnly() map[cedar.EntityUID]bool {
	out := map[cedar.EntityUID]bool{}
	for _, s := range c.Servers {
		for _, t := range s.Tools {
			if t.Effects == EffectsRead {
				out[Tool(s.Name, t.Name)] = true
			}
		}
		for _, t := range s.Routes {
			if t.Effects == EffectsRead {
				out[Route(s.Name, t.Name)] = true
			}
		}
	}
	return out
}

// sensitivities returns the sensitivity of every tool, route and host.
func (c Catalog) sensitivities() map[cedar.EntityUID]string {
	out := map[cedar.EntityUID]string{}
	for _, s := range c.Servers {
		for _, l := range []struct {
			uid     func(string, string) cedar.EntityUID
			entries []ToolEntry
		}{{Tool, s.Tools}, {Route, s.Routes}, {Host, s.Hosts}} {
			for _, t := range l.entries {
				out[l.uid(s.Name, t.Name)] = t.Sensitivity
			}
		}
	}
	return out
}

// untrusted reads an untrusted_output flag; unset counts as untrusted.
func untrusted(b *bool) bool { return b == nil || *b }

// validateHost checks a host entry's name: "host:port", the host a DNS
// name or an IP address, in lower case.
func validateHost(what, name string) error {
	host, port, err := net.SplitHostPort(name)
	n, perr := strconv.Atoi(port)
	switch {
	case err != nil || host == "" || perr != nil || n < 1 || n > 65535 || strings.ToLower(name) != name:
		return fmt.Errorf("%w: %s %q must be host:port, in lower case", fault.Invalid, what, name)
	case strings.ContainsAny(host, "/*\\ ") || len(name) > 260:
		return fmt.Errorf("%w: %s %q is not a host name", fault.Invalid, what, name)
	}
	return nil
}
