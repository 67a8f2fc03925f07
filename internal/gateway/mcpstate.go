package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// mcpState is what the gateway remembers between MCP requests that the
// requests themselves do not carry: which agent owns each task, which
// calls await the agent's input (multi round-trip requests), and which
// tool arguments an upstream mirrors into headers. It is per gateway and
// in memory, bounded, and expires on the injected clock.
type mcpState struct {
	clock clock.Clock

	mu      sync.Mutex
	tasks   map[string]taskOwner
	rounds  map[string]round
	schemas map[string]*toolSchemas
	// versions are the revisions each upstream said it supports
	// (server/discover), so that the gateway's refusal of an unknown one
	// offers only revisions the upstream also speaks.
	versions map[string][]string
}

// Bounds of the state.
const (
	maxTasks          = 65536
	maxRounds         = 65536
	taskOwnerTTL      = 24 * time.Hour
	roundTTL          = 10 * time.Minute
	schemaRefreshWait = 30 * time.Second
)

func newMCPState(c clock.Clock) *mcpState {
	return &mcpState{clock: c, tasks: map[string]taskOwner{}, rounds: map[string]round{}, schemas: map[string]*toolSchemas{},
		versions: map[string][]string{}}
}

// taskOwner is the agent (and, on a legacy revision, the session) that
// created a task.
type taskOwner struct {
	agent, session string
	expires        time.Time
}

func taskKey(server, id string) string { return server + "\x00" + id }

// bindTask records that agent created task id on server.
func (s *mcpState) bindTask(server, id, agent, session string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if len(s.tasks) >= maxTasks {
		evict(s.tasks, now, func(o taskOwner) time.Time { return o.expires })
	}
	s.tasks[taskKey(server, id)] = taskOwner{agent: agent, session: session, expires: now.Add(taskOwnerTTL)}
}

// ownsTask reports whether agent (in session, for a legacy task) created
// task id on server. A task the gateway did not see created is nobody's.
func (s *mcpState) ownsTask(server, id, agent, session string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.tasks[taskKey(server, id)]
	if !ok || !s.clock.Now().Before(o.expires) || o.agent != agent {
		return false
	}
	return o.session == "" || o.session == session
}

// round is a call that an upstream answered with input_required: its retry
// is the same logical call, decided again but counted once.
type round struct {
	call    string // the decision id of the first round
	n       int    // rounds so far
	grants  []string
	expires time.Time
}

// roundKey names a call awaiting input: by the request state the upstream
// handed out when there is one (it must come back unchanged), otherwise by
// the call's arguments.
func roundKey(server, agent, resource string, state, args []byte) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(server), []byte(agent), []byte(resource)} {
		h.Write(part)
		h.Write([]byte{0})
	}
	if len(state) > 0 {
		h.Write([]byte("state\x00"))
		h.Write(state)
	} else {
		h.Write([]byte("args\x00"))
		h.Write(args)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *mcpState) rememberRound(key string, r round) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if len(s.rounds) >= maxRounds {
		evict(s.rounds, now, func(r round) time.Time { return r.expires })
	}
	r.expires = now.Add(roundTTL)
	s.rounds[key] = r
}

// takeRound returns and forgets the round named key: a retry continues it
// once; a new input_required result opens the next.
func (s *mcpState) takeRound(key string) (round, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rounds[key]
	delete(s.rounds, key)
	return r, ok && s.clock.Now().Before(r.expires)
}

// evict drops expired entries, and if none had expired, every entry: a
// full table is an attack or a leak, and forgetting fails closed (a task
// nobody owns is refused; a forgotten round is charged again).
func evict[V any](m map[string]V, now time.Time, expires func(V) time.Time) {
	n := len(m)
	for k, v := range m {
		if !now.Before(expires(v)) {
			delete(m, k)
		}
	}
	if len(m) == n {
		clear(m)
	}
}

// paramHeader is a tool argument an upstream mirrors into an
// Mcp-Param-NAME header (2026-07-28's x-mcp-header).
type paramHeader struct {
	name string   // as declared
	path []string // properties keys from the schema root
	typ  string   // string, integer or boolean
}

// toolSchemas are a server's tools' mirrored arguments, from its latest
// tools/list the gateway saw.
type toolSchemas struct {
	at    time.Time
	tools map[string][]paramHeader
}

var headerToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// learnTools records the mirrored arguments of the tools in a tools/list
// result (the upstream's own, before filtering). An annotation that breaks
// the spec's constraints is not learned; clients must drop such a tool.
func (s *mcpState) learnTools(server string, tools []strictjson.Value, page bool) {
	learned := map[string][]paramHeader{}
	for _, t := range tools {
		name, _ := t.Get("name").Str()
		if name == "" {
			continue
		}
		var hs []paramHeader
		seen := map[string]bool{}
		ok := walkHeaders(t.Get("inputSchema"), nil, &hs)
		for _, h := range hs {
			f := strings.ToLower(h.name)
			ok = ok && !seen[f]
			seen[f] = true
		}
		if ok {
			learned[name] = hs
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.schemas[server]
	if cur == nil || !page {
		cur = &toolSchemas{tools: map[string][]paramHeader{}}
		s.schemas[server] = cur
	}
	cur.at = s.clock.Now()
	for k, v := range learned {
		cur.tools[k] = v
	}
}

// walkHeaders collects x-mcp-header annotations reachable from schema
// through properties keys only; it reports false for an invalid one.
func walkHeaders(schema strictjson.Value, path []string, out *[]paramHeader) bool {
	for _, p := range schema.Get("properties").Members() {
		prop := p.Value
		at := append(append([]string(nil), path...), p.Key)
		if h := prop.Get("x-mcp-header"); h.Exists() {
			name, _ := h.Str()
			typ, _ := prop.Get("type").Str()
			if !headerToken.MatchString(name) || (typ != "string" && typ != "integer" && typ != "boolean") {
				return false
			}
			*out = append(*out, paramHeader{name: name, path: at, typ: typ})
		}
		if !walkHeaders(prop, at, out) {
			return false
		}
	}
	return true
}

// toolHeaders returns a tool's mirrored arguments and whether the gateway
// knows the server's tools recently enough to trust that list.
func (s *mcpState) toolHeaders(server, tool string) ([]paramHeader, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.schemas[server]
	if cur == nil {
		return nil, false
	}
	hs, ok := cur.tools[tool]
	return hs, ok
}

// schemaAge is how long ago the server's tools were learned (-1: never).
func (s *mcpState) schemaAge(server string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.schemas[server]; cur != nil {
		return s.clock.Now().Sub(cur.at)
	}
	return -1
}

// paramHeaders checks a 2026-07-28 tools/call's Mcp-Param-* headers
// against its arguments, per the tool's annotations, and returns the
// headers to forward: exactly one per annotated argument present in the
// body, each equal to it. A header that disagrees with the body, or an
// argument present without its header, is refused. Mcp-Param headers the
// tool does not declare are not forwarded: the gateway cannot check them.
func paramHeaders(in http.Header, hs []paramHeader, args strictjson.Value) (http.Header, error) {
	out := http.Header{}
	for _, h := range hs {
		v := args
		for _, k := range h.path {
			v = v.Get(k)
		}
		key := "Mcp-Param-" + h.name
		got := in.Values(key)
		if !v.Exists() || v.Kind() == strictjson.Null {
			if len(got) > 0 {
				return nil, fmt.Errorf("header mismatch: %s is sent but its argument is absent", key)
			}
			continue
		}
		want, err := headerForm(v, h.typ)
		if err != nil {
			return nil, fmt.Errorf("argument for %s: %w", key, err)
		}
		if len(got) != 1 {
			return nil, fmt.Errorf("header mismatch: %s is required once for the argument it mirrors", key)
		}
		dec, err := decodeHeaderValue(got[0])
		if err != nil {
			return nil, fmt.Errorf("header mismatch: %s: %w", key, err)
		}
		if dec != want && !(h.typ == "integer" && sameInteger(dec, want)) {
			return nil, fmt.Errorf("header mismatch: %s %.64q does not match the argument %.64q", key, dec, want)
		}
		out.Set(key, encodeHeaderValue(want))
	}
	return out, nil
}

// headerForm is an argument's header text: a string as is, an integer in
// decimal, a boolean as true or false.
func headerForm(v strictjson.Value, typ string) (string, error) {
	switch typ {
	case "string":
		if s, ok := v.Str(); ok {
			return s, nil
		}
	case "boolean":
		if b, ok := v.Boolean(); ok {
			return strconv.FormatBool(b), nil
		}
	case "integer":
		if text, ok := v.NumberText(); ok {
			f, err := strconv.ParseFloat(text, 64)
			if err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53-1 {
				return strconv.FormatInt(int64(f), 10), nil
			}
		}
	}
	return "", fmt.Errorf("is not a %s", typ)
}

// sameInteger compares two integers written differently (42 and 42.0).
func sameInteger(a, b string) bool {
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	return err1 == nil && err2 == nil && x == y
}

// learnVersions records the revisions an upstream said it supports.
func (s *mcpState) learnVersions(server string, vs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions[server] = vs
}

// upstreamVersions are the revisions the upstream last said it supports;
// nil if it has not said.
func (s *mcpState) upstreamVersions(server string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[server]
}
