package token

import (
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
)

func TestCovers(t *testing.T) {
	const gw = "https://gw.example"
	cases := []struct {
		name                string
		registered, request string
		want                bool
	}{
		{"exact", gw, gw, true},
		{"exact urn", "urn:example:api", "urn:example:api", true},
		{"server under the gateway", gw, gw + "/mcp/files", true},
		{"http api under the gateway", gw, gw + "/http/billing", true},
		{"registered with a trailing slash", gw + "/", gw + "/mcp/files", true},
		{"registered with a path", gw + "/base", gw + "/base/mcp/files", true},
		{"unreserved characters", gw, gw + "/mcp/a-b_c.d~e", true},
		{"eight segments", gw, gw + "/1/2/3/4/5/6/7/8", true},

		// Prefix attacks: another host that starts with the same text.
		{"host suffix", gw, "https://gw.example.evil/mcp/files", false},
		{"host suffix, no path", gw, "https://gw.example.evil", false},
		{"longer host label", gw, "https://gw.examplex/mcp/files", false},
		{"user info", gw, "https://gw.example@evil.example/mcp/files", false},
		{"other port", gw, "https://gw.example:8443/mcp/files", false},
		{"other scheme", gw, "http://gw.example/mcp/files", false},
		{"case is not folded", gw, "https://GW.example/mcp/files", false},
		// A sibling that shares a prefix of the last segment.
		{"segment prefix", gw + "/mcp", gw + "/mcpx", false},
		{"segment prefix below", gw + "/mcp", gw + "/mcpx/files", false},
		{"parent of the registered", gw + "/mcp/files", gw + "/mcp", false},
		{"sibling", gw + "/mcp/files", gw + "/mcp/notes", false},
		// Paths that would mean something else once normalized.
		{"dot dot", gw + "/mcp", gw + "/mcp/../admin", false},
		{"dot", gw, gw + "/./mcp", false},
		{"encoded dot dot", gw + "/mcp", gw + "/mcp/%2e%2e/admin", false},
		{"encoded slash", gw, gw + "/mcp%2Ffiles", false},
		{"empty segment", gw, gw + "/mcp//files", false},
		{"leading empty segment", gw, gw + "//mcp", false},
		{"trailing slash", gw, gw + "/mcp/files/", false},
		{"backslash", gw, gw + `/mcp\..\admin`, false},
		{"query", gw, gw + "/mcp/files?x=1", false},
		{"fragment", gw, gw + "/mcp/files#x", false},
		{"space", gw, gw + "/mcp/a b", false},
		{"unicode", gw, gw + "/mcp/fi\u0131es", false},
		{"control character", gw, gw + "/mcp/a\x00", false},
		{"too deep", gw, gw + "/1/2/3/4/5/6/7/8/9", false},
		{"too long", gw, gw + "/" + strings.Repeat("a", 600), false},
		// Registrations that have no children.
		{"registered urn", "urn:example:api", "urn:example:api/x", false},
		{"registered with a query", gw + "/?tenant=a", gw + "/?tenant=a/mcp", false},
		{"registered with user info", "https://u@gw.example", "https://u@gw.example/mcp", false},
		{"registered with an odd path", gw + "/a%2Fb", gw + "/a%2Fb/c", false},
		{"registered without authority", "https:///x", "https:///x/y", false},
		{"empty registered", "", gw, false},
		{"empty request", gw, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Covers(c.registered, c.request); got != c.want {
				t.Fatalf("Covers(%q, %q) = %v, want %v", c.registered, c.request, got, c.want)
			}
		})
	}
}

func TestAncestors(t *testing.T) {
	cases := []struct {
		uri  string
		want []string
	}{
		{"https://gw.example/mcp/files", []string{"https://gw.example/mcp", "https://gw.example/mcp/", "https://gw.example", "https://gw.example/"}},
		{"https://gw.example/mcp", []string{"https://gw.example", "https://gw.example/"}},
		{"https://gw.example", nil},
		{"https://gw.example/mcp?x=/y", nil},
		{"urn:a:b", nil},
	}
	for _, c := range cases {
		if got := ancestors(c.uri); !slices.Equal(got, c.want) {
			t.Errorf("ancestors(%q) = %q, want %q", c.uri, got, c.want)
		}
	}
}

// FuzzCovers checks that whatever a registration covers besides itself is
// below it in the URL sense too: same scheme, host and port, no user
// info, query or fragment, a path already clean that extends the
// registered path by whole segments.
func FuzzCovers(f *testing.F) {
	for _, s := range [][2]string{
		{"https://gw.example", "https://gw.example/mcp/files"},
		{"https://gw.example/", "https://gw.example.evil/mcp"},
		{"https://gw.example/mcp", "https://gw.example/mcpx"},
		{"https://gw.example", "https://gw.example@evil/x"},
		{"https://gw.example/a", "https://gw.example/a/%2e%2e"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, registered, requested string) {
		if !Covers(registered, requested) || registered == requested {
			return
		}
		r, err1 := url.Parse(registered)
		q, err2 := url.Parse(requested)
		if err1 != nil || err2 != nil {
			t.Fatalf("Covers(%q, %q) but they do not parse: %v %v", registered, requested, err1, err2)
		}
		if q.Scheme != r.Scheme || q.Host != r.Host || q.User != nil || q.RawQuery != "" || q.ForceQuery || q.Fragment != "" || q.Opaque != "" || q.Host == "" {
			t.Fatalf("Covers(%q, %q) but %+v is not under %+v", registered, requested, q, r)
		}
		base := strings.TrimSuffix(r.EscapedPath(), "/")
		if q.EscapedPath() != q.Path || path.Clean(q.Path) != q.Path || !strings.HasPrefix(q.Path, base+"/") {
			t.Fatalf("Covers(%q, %q) but path %q is not a clean child of %q", registered, requested, q.EscapedPath(), base)
		}
	})
}
