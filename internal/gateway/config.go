package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Config is a gateway's configuration (YAML). Keys that are flags of
// `bulkhead gateway` (listen, server, credentials, ...) may sit beside
// servers in the same file.
type Config struct {
	// Listen is the HTTPS address agents connect to.
	Listen string `yaml:"listen"`
	// Name makes the gateway's SPIFFE ID spiffe://TD/bulkhead/gateway/NAME.
	Name string `yaml:"name"`
	// Resource is the audience tokens must carry (RFC 8707); default
	// https://LISTEN.
	Resource string   `yaml:"resource"`
	Servers  []Server `yaml:"servers"`
	Limits   Limits   `yaml:"limits"`
	// Sensitive bounds what an agent reads from sensitive tools in total,
	// across servers, in budgets that do not refill.
	Sensitive Sensitive `yaml:"sensitive"`
	// Risk configures the risk score of each call (context.risk).
	Risk Risk `yaml:"risk"`
}

// Risk configures scoring calls against agents' baselines.
type Risk struct {
	// AlertAt is the score at which a call is recorded as an anomaly
	// (gateway.anomaly); default 60, -1 for never.
	AlertAt int `yaml:"alert_at"`
}

// Sensitive bounds what an agent reads from the tools and routes whose
// catalog sensitivity is at least Level: the bytes of their answers and
// the distinct resources (tool and arguments) it touches, per task and
// per agent and UTC day. Like every budget they do not refill: slow
// exfiltration, spread over hours under any rate limit, stops at the same
// total as a fast one. 0 means no limit.
type Sensitive struct {
	// Level is medium or high (the default): the least sensitivity that
	// counts.
	Level                string `yaml:"level"`
	BytesPerTask         int64  `yaml:"bytes_per_task"`
	BytesPerAgentDay     int64  `yaml:"bytes_per_agent_day"`
	ResourcesPerTask     int64  `yaml:"resources_per_task"`
	ResourcesPerAgentDay int64  `yaml:"resources_per_agent_day"`
}

// counts reports whether a resource of sensitivity counts toward the
// limits. Once any limit is set, a resource of unknown sensitivity (not
// in the catalog the decision used) counts: what the gateway cannot rate
// is bounded like what it rates sensitive.
func (s Sensitive) counts(sensitivity string) bool {
	if sensitivity == "" {
		return s.BytesPerTask > 0 || s.BytesPerAgentDay > 0 || s.ResourcesPerTask > 0 || s.ResourcesPerAgentDay > 0
	}
	rank := map[string]int{policy.SensitivityLow: 1, policy.SensitivityMedium: 2, policy.SensitivityHigh: 3}
	return rank[sensitivity] >= rank[s.Level]
}

// Server is one upstream: an MCP server (streamable HTTP or a stdio
// command) or an HTTP API.
type Server struct {
	Name string `yaml:"name"`
	MCP  *MCP   `yaml:"mcp"`
	HTTP *HTTP  `yaml:"http"`
	// Callers are the SPIFFE IDs allowed to reach this server at all
	// (identity-based isolation, before any policy). A trailing "*"
	// matches any rest of the path, so agent/* includes sub-agents; a "*"
	// elsewhere matches within one path segment.
	Callers []string `yaml:"callers"`
	// Credentials are injected upstream, by reference to a secret.
	Credentials *Credentials `yaml:"credentials"`
	// Budget caps each agent's use of this server per task; it does not
	// refill until the task ends.
	Budget Budget `yaml:"budget"`
	// RateLimit is an ordinary rate limit per agent.
	RateLimit RateLimit `yaml:"rate_limit"`
}

// MCP names an MCP upstream: a streamable HTTP URL or a stdio command.
type MCP struct {
	URL     string   `yaml:"url"`
	Command []string `yaml:"command"`
	// Env is the complete environment of a stdio command; the gateway's
	// own environment is never passed on.
	Env []string `yaml:"env"`
	Dir string   `yaml:"dir"`
	// Sandbox confines a stdio server's processes (see internal/sandbox):
	// absent, the strict profile; "none" runs it unconfined, which the
	// gateway warns of at start.
	Sandbox *Sandbox `yaml:"sandbox"`
}

// Sandbox is a stdio server's sandbox: a base profile (strict, or a
// profile file) with more paths and other bounds.
type Sandbox struct {
	None    bool     `yaml:"-"`
	Profile string   `yaml:"profile"`
	Read    []string `yaml:"read"`
	Write   []string `yaml:"write"`
	Memory  int64    `yaml:"memory"`
	Pids    int64    `yaml:"pids"`
	// Egress lists the "host:port" destinations the server may reach,
	// through the gateway's egress proxy, each connection recorded; none
	// (the default) leaves it no network at all.
	Egress []string `yaml:"egress"`
	// EgressCredentials are injected by the proxy into plain-HTTP
	// requests to a listed destination, so that the tool process never
	// holds them; they are redacted from what comes back.
	EgressCredentials map[string]*Credentials `yaml:"egress_credentials"`
	// EgressBytes caps the bytes the server's processes send out through
	// the proxy, per agent per task (shared by every gateway, never
	// refilled, like the server's budget); 0 is no cap.
	EgressBytes int64 `yaml:"egress_bytes"`
}

// UnmarshalYAML reads "none" or a mapping.
func (s *Sandbox) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "none" {
			return fmt.Errorf("sandbox must be none or a mapping, not %q", n.Value)
		}
		*s = Sandbox{None: true}
		return nil
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			switch k := n.Content[i].Value; k {
			case "profile", "read", "write", "memory", "pids", "egress_credentials", "egress_bytes":
			case "egress":
				if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && v.Value == "none" {
					v.Kind, v.Tag, v.Value = yaml.SequenceNode, "!!seq", ""
				}
			default:
				return fmt.Errorf("sandbox: unknown key %q", k)
			}
		}
	}
	type plain Sandbox
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = Sandbox(p)
	return nil
}

// HTTP names a REST upstream and maps its routes to Cedar resources.
type HTTP struct {
	URL    string  `yaml:"url"`
	Routes []Route `yaml:"routes"`
}

// Route maps "METHOD /path/{param}" to Route::"SERVER/NAME".
type Route struct {
	Name   string `yaml:"name"`
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
	// Body is what the route's request body is: json (the default),
	// form, none, or opaque (any type, forwarded as is; policy sees only
	// its size and SHA-256). A request whose Content-Type does not match
	// is refused (415) before the policy is asked.
	Body string `yaml:"body"`
}

// Credentials injects a secret into every upstream request: the header
// gets Format with {secret} replaced (default "Bearer {secret}" for
// Authorization, "{secret}" otherwise).
type Credentials struct {
	Header string `yaml:"header"`
	Secret string `yaml:"secret"`
	Format string `yaml:"format"`
}

// Budget is a cumulative cap per agent per task.
type Budget struct {
	Calls         int64 `yaml:"calls"`
	ResponseBytes int64 `yaml:"response_bytes"`
}

// RateLimit is a token bucket per agent.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Limits bound every hop.
type Limits struct {
	MaxBody         int64         `yaml:"max_body"`         // request body, default 1 MiB
	MaxResponse     int64         `yaml:"max_response"`     // buffered upstream response, default 8 MiB
	MaxInput        int64         `yaml:"max_input"`        // bytes of body/query given to policy, default 64 KiB
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"` // default 60s
	StreamIdle      time.Duration `yaml:"stream_idle"`      // an SSE stream with no event, default 10m
	ReadHeader      time.Duration `yaml:"read_header"`      // default 10s
}

// ParseConfig decodes and validates a gateway configuration. Nested keys
// must be known; a top-level key that is not the gateway's is allowed only
// if known reports it (a flag of the command, set in the same file).
func ParseConfig(b []byte, known func(string) bool) (*Config, error) {
	var doc struct {
		Config `yaml:",inline"`
		Other  map[string]any `yaml:",inline"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	for k := range doc.Other {
		if known == nil || !known(k) {
			return nil, fmt.Errorf("gateway config: unknown key %q", k)
		}
	}
	c := doc.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// httpActions are the Cedar actions of HTTP routes: the method itself.
var httpActions = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true}

var (
	routeParam = regexp.MustCompile(`^\{[A-Za-z_][A-Za-z0-9_]*\}$`)
	headerName = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	// Headers that may never be set by configuration: they carry identity
	// or framing, and injecting them would smuggle.
	forbiddenHeaders = map[string]bool{"host": true, "content-length": true, "transfer-encoding": true, "connection": true,
		"mcp-session-id": true, "te": true, "upgrade": true, "x-forwarded-for": true}
)

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("gateway config: "+format, args...)) }
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9443"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen %q: %v", c.Listen, err)
	}
	if c.Name == "" {
		c.Name = "default"
	}
	if err := policy.ValidateName("gateway name", c.Name); err != nil {
		bad("%v", err)
	}
	if c.Resource == "" {
		c.Resource = "https://" + c.Listen
	}
	if u, err := url.Parse(c.Resource); err != nil || !u.IsAbs() || u.Fragment != "" {
		bad("resource %q must be an absolute URI", c.Resource)
	}
	if len(c.Servers) == 0 {
		bad("no servers")
	}
	switch c.Sensitive.Level {
	case "":
		c.Sensitive.Level = policy.SensitivityHigh
	case policy.SensitivityMedium, policy.SensitivityHigh:
	default:
		bad("sensitive.level %q must be medium or high", c.Sensitive.Level)
	}
	if c.Sensitive.BytesPerTask < 0 || c.Sensitive.BytesPerAgentDay < 0 || c.Sensitive.ResourcesPerTask < 0 || c.Sensitive.ResourcesPerAgentDay < 0 {
		bad("sensitive limits must not be negative")
	}
	if c.Risk.AlertAt < -1 || c.Risk.AlertAt > 100 {
		bad("risk.alert_at %d must be from 0 to 100, or -1 for never", c.Risk.AlertAt)
	}
	seen := map[string]bool{}
	for i := range c.Servers {
		s := &c.Servers[i]
		if err := policy.ValidateName("server name", s.Name); err != nil {
			bad("servers[%d]: %v", i, err)
		}
		if seen[s.Name] {
			bad("server %q appears twice", s.Name)
		}
		seen[s.Name] = true
		switch {
		case (s.MCP == nil) == (s.HTTP == nil):
			bad("server %q: give exactly one of mcp or http", s.Name)
		case s.MCP != nil && (s.MCP.URL == "") == (len(s.MCP.Command) == 0):
			bad("server %q: mcp needs exactly one of url or command", s.Name)
		case s.MCP != nil && s.MCP.URL != "":
			if err := checkUpstreamURL(s.MCP.URL); err != nil {
				bad("server %q: %v", s.Name, err)
			}
			if s.MCP.Sandbox != nil {
				bad("server %q: sandbox is for stdio servers (a command), which the gateway starts", s.Name)
			}
		case s.HTTP != nil:
			if err := checkUpstreamURL(s.HTTP.URL); err != nil {
				bad("server %q: %v", s.Name, err)
			}
			if len(s.HTTP.Routes) == 0 {
				bad("server %q: an http server needs routes (deny by default: unmapped paths are refused)", s.Name)
			}
			names := map[string]bool{}
			for j, r := range s.HTTP.Routes {
				r.Method = strings.ToUpper(r.Method)
				s.HTTP.Routes[j].Method = r.Method
				if err := policy.ValidateName("route name", r.Name); err != nil {
					bad("server %q route %d: %v", s.Name, j, err)
				}
				if names[r.Name] {
					bad("server %q: route %q appears twice", s.Name, r.Name)
				}
				names[r.Name] = true
				if _, ok := httpActions[r.Method]; !ok {
					bad("server %q route %q: method %q", s.Name, r.Name, r.Method)
				}
				if err := checkRoutePath(r.Path); err != nil {
					bad("server %q route %q: %v", s.Name, r.Name, err)
				}
				switch r.Body {
				case "":
					s.HTTP.Routes[j].Body = bodyJSON
				case bodyJSON, bodyForm, bodyNone, bodyOpaque:
				default:
					bad("server %q route %q: body %q (want json, form, none or opaque)", s.Name, r.Name, r.Body)
				}
			}
		}
		if len(s.Callers) == 0 {
			bad("server %q: callers is required (name who may reach it; deny by default)", s.Name)
		}
		for _, p := range s.Callers {
			if !strings.HasPrefix(p, "spiffe://") {
				bad("server %q: caller %q is not a SPIFFE ID pattern", s.Name, p)
			} else if _, err := path.Match(strings.TrimSuffix(p, "*"), ""); err != nil {
				bad("server %q: caller pattern %q: %v", s.Name, p, err)
			}
		}
		if cr := s.Credentials; cr != nil {
			if err := cr.validate(); err != nil {
				bad("server %q: %v", s.Name, err)
			}
		}
		if s.MCP != nil && s.MCP.Sandbox != nil {
			if s.MCP.Sandbox.EgressBytes < 0 {
				bad("server %q: egress_bytes must not be negative", s.Name)
			}
			for dest, cr := range s.MCP.Sandbox.EgressCredentials {
				if !slices.Contains(s.MCP.Sandbox.Egress, dest) {
					bad("server %q: egress_credentials for %q, which egress does not list", s.Name, dest)
				}
				if err := cr.validate(); err != nil {
					bad("server %q: egress_credentials for %q: %v", s.Name, dest, err)
				}
			}
		}
		if s.Budget.Calls < 0 || s.Budget.ResponseBytes < 0 || s.RateLimit.PerSecond < 0 || s.RateLimit.Burst < 0 {
			bad("server %q: budgets and rate limits must not be negative", s.Name)
		}
	}
	l := &c.Limits
	l.MaxBody = defInt(l.MaxBody, 1<<20)
	l.MaxResponse = defInt(l.MaxResponse, 8<<20)
	l.MaxInput = defInt(l.MaxInput, 64<<10)
	l.UpstreamTimeout = defDur(l.UpstreamTimeout, 60*time.Second)
	l.StreamIdle = defDur(l.StreamIdle, 10*time.Minute)
	l.ReadHeader = defDur(l.ReadHeader, 10*time.Second)
	return errors.Join(errs...)
}

func defInt(v, d int64) int64 {
	if v <= 0 {
		return d
	}
	return v
}

func defDur(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}

func checkUpstreamURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("upstream URL %q must be http(s)://host[:port][/path] without credentials, query or fragment", s)
	}
	return nil
}

func checkRoutePath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") {
		return fmt.Errorf("path %q must start with / and have no empty segment", p)
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if strings.ContainsAny(seg, "{}") && !routeParam.MatchString(seg) {
			return fmt.Errorf("path segment %q: a parameter is a whole segment {name}", seg)
		}
		if seg == "." || seg == ".." {
			return fmt.Errorf("path %q has a dot segment", p)
		}
	}
	return nil
}

// CallerAllowed reports whether id matches one of the patterns.
func CallerAllowed(patterns []string, id string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && !strings.Contains(prefix, "*") {
			if strings.HasPrefix(id, prefix) && len(id) > len(prefix) {
				return true
			}
			continue
		}
		if ok, _ := path.Match(p, id); ok {
			return true
		}
	}
	return false
}

// validate checks credentials and fills the default format.
func (cr *Credentials) validate() error {
	if !headerName.MatchString(cr.Header) || forbiddenHeaders[strings.ToLower(cr.Header)] {
		return fmt.Errorf("credentials header %q is not allowed", cr.Header)
	}
	if cr.Secret == "" {
		return errors.New("credentials need a secret name")
	}
	if cr.Format == "" {
		cr.Format = "{secret}"
		if strings.EqualFold(cr.Header, "Authorization") {
			cr.Format = "Bearer {secret}"
		}
	}
	if strings.Count(cr.Format, "{secret}") != 1 || strings.ContainsAny(cr.Format, "\r\n") {
		return errors.New("credentials format must contain {secret} once and no newline")
	}
	return nil
}
