// Package gatewaytest provides real MCP and HTTP upstreams for gateway
// tests, built with the official MCP Go SDK.
package gatewaytest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// FilesServer is an MCP server over streamable HTTP with the tools
// read_file, write_file and search. It answers 401 unless requests carry
// the expected Authorization header, which lets tests prove credential
// injection: only the gateway knows the value.
type FilesServer struct {
	URL   string
	Calls atomic.Int64
	// SawAuth records the Authorization values the upstream received.
	SawAuth atomic.Value
}

type pathArgs struct {
	Path string `json:"path"`
}

type writeArgs struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

type queryArgs struct {
	Query string `json:"query"`
}

// StartFiles starts a FilesServer that requires "Authorization: want".
func StartFiles(t testing.TB, want string) *FilesServer {
	t.Helper()
	fs := &FilesServer{}
	server := mcp.NewServer(&mcp.Implementation{Name: "files", Version: "test"}, nil)
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(server, &mcp.Tool{Name: "read_file", Description: "read a file"}, func(ctx context.Context, req *mcp.CallToolRequest, in pathArgs) (*mcp.CallToolResult, any, error) {
		fs.Calls.Add(1)
		return text("contents of " + in.Path), nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "write_file", Description: "write a file"}, func(ctx context.Context, req *mcp.CallToolRequest, in writeArgs) (*mcp.CallToolResult, any, error) {
		fs.Calls.Add(1)
		return text(fmt.Sprintf("wrote %d bytes to %s", len(in.Content), in.Path)), nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "search", Description: "search"}, func(ctx context.Context, req *mcp.CallToolRequest, in queryArgs) (*mcp.CallToolResult, any, error) {
		fs.Calls.Add(1)
		return text("results for " + in.Query), nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		fs.SawAuth.Store(got)
		if got != want {
			http.Error(w, "upstream credential missing or wrong", http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.Header.Get("Cookie")+r.Header.Get("X-Forwarded-For"), "x") {
			http.Error(w, "unexpected forwarded header", http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	fs.URL = srv.URL + "/mcp"
	return fs
}
