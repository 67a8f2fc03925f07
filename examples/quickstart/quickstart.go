// Package quickstart is the newcomer's example: a small MCP tool server
// ("docs"), the gateway configuration in front of it, a tool catalog and
// policies. `bulkhead demo` runs it all in one process; the README walks
// through the same files by hand.
package quickstart

import (
	"context"
	"crypto/subtle"
	"embed"
	"fmt"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Files holds gateway.yaml, tools.yaml and policies/*.cedar.
//
//go:embed gateway.yaml tools.yaml policies/*.cedar
var Files embed.FS

type searchArgs struct {
	Query string `json:"query" jsonschema:"words to look for"`
}

type pageArgs struct {
	Path string `json:"path" jsonschema:"the page's path, e.g. /guides/enroll.md"`
}

var pages = map[string]string{
	"/guides/enroll.md":   "Agents enroll with a one-time join token; the key never leaves the agent.",
	"/guides/policy.md":   "Every tool call is a Cedar request; forbids beat permits.",
	"/guides/evidence.md": "Every decision is in a Merkle log with signed checkpoints.",
}

// ToolServer returns the docs MCP server (streamable HTTP) with the tools
// search, read_page and delete_page. Requests must carry X-Api-Key: apiKey —
// a static credential that only the gateway holds, to show credential
// injection.
func ToolServer(apiKey string) http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: "docs", Version: "1.0.0"}, nil)
	text := func(t string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: t}}}
	}
	mcp.AddTool(s, &mcp.Tool{Name: "search", Description: "Search the documentation"},
		func(_ context.Context, _ *mcp.CallToolRequest, in searchArgs) (*mcp.CallToolResult, any, error) {
			var hits []string
			for p, body := range pages {
				if strings.Contains(strings.ToLower(body), strings.ToLower(in.Query)) {
					hits = append(hits, p)
				}
			}
			return text(fmt.Sprintf("%d page(s) match %q: %s", len(hits), in.Query, strings.Join(hits, ", "))), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "read_page", Description: "Read a page by path"},
		func(_ context.Context, _ *mcp.CallToolRequest, in pageArgs) (*mcp.CallToolResult, any, error) {
			if body, ok := pages[in.Path]; ok {
				return text(body), nil, nil
			}
			return text("no page at " + in.Path), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_page", Description: "Delete a page"},
		func(_ context.Context, _ *mcp.CallToolRequest, in pageArgs) (*mcp.CallToolResult, any, error) {
			return text("deleted " + in.Path), nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Api-Key")), []byte(apiKey)) != 1 {
			http.Error(w, "missing or wrong X-Api-Key", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
