package canonpath

import (
	"errors"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// rfcDotCases are the reference resolution examples of RFC 3986 §5.4 that
// involve dot segments, plus the two worked examples of §5.2.4. ref is the
// reference as written; merged is the path a client sends once the
// reference is merged with the base path "/b/c/" (base URI
// "http://a/b/c/d;p?q") but before remove_dot_segments. resolved is the
// RFC's answer: the reading a server that removes dot segments would take,
// which a policy looking at the unresolved path would not. Both HTTP and
// Arg must refuse every one, since dot segments are never canonical; for
// HTTP the ';' of "g;x=1" is refused first.
var rfcDotCases = []struct {
	name, ref, merged, resolved, httpErr, argErr string
}{
	{"5.4.1 ./g", "./g", "/b/c/./g", "/b/c/g", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 .", ".", "/b/c/.", "/b/c/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ./", "./", "/b/c/./", "/b/c/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ..", "..", "/b/c/..", "/b/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ../", "../", "/b/c/../", "/b/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ../g", "../g", "/b/c/../g", "/b/g", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ../..", "../..", "/b/c/../..", "/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ../../", "../../", "/b/c/../../", "/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.1 ../../g", "../../g", "/b/c/../../g", "/g", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.2 ../../../g", "../../../g", "/b/c/../../../g", "/g", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.2 ../../../../g", "../../../../g", "/b/c/../../../../g", "/g", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.2 /./g", "/./g", "/./g", "/g", "dot segment at offset 1", "dot segment at offset 1"},
	{"5.4.2 /../g", "/../g", "/../g", "/g", "dot segment at offset 1", "dot segment at offset 1"},
	{"5.4.2 ./../g", "./../g", "/b/c/./../g", "/b/g", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.2 ./g/.", "./g/.", "/b/c/./g/.", "/b/c/g/", "dot segment at offset 5", "dot segment at offset 0"},
	{"5.4.2 g/./h", "g/./h", "/b/c/g/./h", "/b/c/g/h", "dot segment at offset 7", "dot segment at offset 2"},
	{"5.4.2 g/../h", "g/../h", "/b/c/g/../h", "/b/c/h", "dot segment at offset 7", "dot segment at offset 2"},
	{"5.4.2 g;x=1/./y", "g;x=1/./y", "/b/c/g;x=1/./y", "/b/c/g;x=1/y", "path parameter (;) at offset 6", "dot segment at offset 6"},
	{"5.4.2 g;x=1/../y", "g;x=1/../y", "/b/c/g;x=1/../y", "/b/c/y", "path parameter (;) at offset 6", "dot segment at offset 6"},
	{"5.2.4 /a/b/c/./../../g", "/a/b/c/./../../g", "/a/b/c/./../../g", "/a/g", "dot segment at offset 7", "dot segment at offset 7"},
	{"5.2.4 mid/content=5/../6", "mid/content=5/../6", "/mid/content=5/../6", "/mid/6", "dot segment at offset 15", "dot segment at offset 14"},
}

func TestRFC3986DotSegments(t *testing.T) {
	for _, c := range rfcDotCases {
		t.Run(c.name, func(t *testing.T) {
			// The case is only worth refusing if resolution changes it.
			if c.resolved == c.merged {
				t.Fatalf("resolved %q equals merged", c.resolved)
			}
			_, err := HTTP(c.merged)
			wantRefusal(t, "HTTP", err, c.httpErr)
			wantRefusal(t, "Arg", Arg(c.ref), c.argErr)
		})
	}
}

// httpRefusals are inputs that HTTP must refuse, with a substring of the
// error it must give (reason and offset, where the offset is certain).
var httpRefusals = []struct{ name, in, want string }{
	{"empty", "", "path must start with / at offset 0"},
	{"relative", "a/b", "path must start with / at offset 0"},
	{"asterisk form", "*", "path must start with / at offset 0"},
	{"absolute form", "http://h/a", "path must start with / at offset 0"},

	{"truncated escape", "/a%", "invalid percent-encoding at offset 2"},
	{"one hex digit", "/a%2", "invalid percent-encoding at offset 2"},
	{"non-hex escape", "/a%zz", "invalid percent-encoding at offset 2"},
	{"IIS %u escape", "/%u002e%u002e/x", "invalid percent-encoding at offset 1"},

	{"raw backslash", `/a\..\b`, "backslash at offset 2"},
	{"encoded backslash lower", "/a/..%5cb", "encoded backslash (%5C) at offset 5"},
	{"encoded backslash upper", "/a%5C..%5Cetc", "encoded backslash (%5C) at offset 2"},
	{"encoded slash lower", "/a%2f..%2fb", "encoded slash (%2F) at offset 2"},
	{"encoded slash upper", "/v1/users/1%2F..%2F2", "encoded slash (%2F) at offset 11"},
	{"double encoded dots", "/a/%252e%252e/b", "double encoding (%25) at offset 3"},
	{"double encoded slash", "/a%252fb", "double encoding (%25) at offset 2"},

	{"overlong dots", "/a/%c0%ae%c0%ae/b", "invalid UTF-8 at offset 3"},
	{"overlong slash", "/a%c0%afb", "invalid UTF-8 at offset 2"},
	{"overlong backslash", "/a%c1%9cb", "invalid UTF-8 at offset 2"},
	{"overlong dot three bytes", "/%e0%80%ae", "invalid UTF-8 at offset 1"},
	{"truncated UTF-8", "/a%C3", "invalid UTF-8 at offset 2"},
	{"lone continuation byte", "/%80", "invalid UTF-8 at offset 1"},
	{"encoded surrogate", "/%ED%A0%80", "invalid UTF-8 at offset 1"},
	{"beyond U+10FFFF", "/%F4%90%80%80", "invalid UTF-8 at offset 1"},

	{"fullwidth dots", "/a/%EF%BC%8E%EF%BC%8E/b", "not NFKC-normalized at offset 3"},
	{"fullwidth solidus", "/a%EF%BC%8Fb", "not NFKC-normalized at offset 2"},
	{"fullwidth reverse solidus", "/a%EF%BC%BCb", "not NFKC-normalized at offset 2"},
	{"one dot leaders", "/%E2%80%A4%E2%80%A4", "not NFKC-normalized at offset 1"},
	{"two dot leader", "/%E2%80%A5", "not NFKC-normalized at offset 1"},
	{"small full stops", "/%EF%B9%92%EF%B9%92", "not NFKC-normalized at offset 1"},
	{"ligature", "/%EF%AC%81le", "not NFKC-normalized at offset 1"},
	{"no-break space", "/a%C2%A0b", "not NFKC-normalized at offset 2"},
	{"decomposed accent", "/nai%CC%88ve", "not NFKC-normalized"},

	{"raw fullwidth dot", "/a/\uff0e", "unencoded non-ASCII byte at offset 3"},
	{"raw non-ASCII", "/na\u00efve", "unencoded non-ASCII byte at offset 3"},

	{"encoded NUL", "/a%00b", "control character at offset 2"},
	{"raw NUL", "/a\x00b", "control character at offset 2"},
	{"encoded newline", "/a%0a", "control character at offset 2"},
	{"encoded CRLF", "/a%0D%0Ab", "control character at offset 2"},
	{"raw tab", "/a\tb", "control character at offset 2"},
	{"encoded DEL", "/a%7F", "control character at offset 2"},
	{"encoded C1 NEL", "/a%C2%85", "control character at offset 2"},
	{"zero width space", "/..%E2%80%8B", "invisible format character at offset 3"},
	{"right-to-left override", "/a%E2%80%AEb", "invisible format character at offset 2"},
	{"byte order mark", "/%EF%BB%BFa", "invisible format character at offset 1"},
	{"soft hyphen", "/a%C2%ADb", "invisible format character at offset 2"},
	{"line separator", "/a%E2%80%A8", "invisible format character at offset 2"},

	{"path parameter", "/a;jsessionid=x/b", "path parameter (;) at offset 2"},
	{"tomcat dot dot semicolon", "/a/..;/b", "path parameter (;) at offset 5"},
	{"encoded semicolon", "/a%3bb", "encoded path parameter (%3B) at offset 2"},
	{"raw question mark", "/a?b", "query or fragment delimiter at offset 2"},
	{"raw hash", "/a#b", "query or fragment delimiter at offset 2"},
	{"encoded question mark", "/a%3Fb", "encoded query or fragment delimiter at offset 2"},
	{"encoded hash", "/a%23b", "encoded query or fragment delimiter at offset 2"},

	{"empty segment", "/a//b", "empty segment at offset 3"},
	{"leading double slash", "//evil.example/x", "empty segment at offset 1"},
	{"double trailing slash", "/a//", "empty segment at offset 3"},

	{"dot", "/a/./b", "dot segment at offset 3"},
	{"dot dot", "/a/../b", "dot segment at offset 3"},
	{"trailing dot dot", "/a/..", "dot segment at offset 3"},
	{"root dot", "/.", "dot segment at offset 1"},
	{"root dot dot", "/..", "dot segment at offset 1"},
	{"encoded dot", "/a/%2e/b", "dot segment at offset 3"},
	{"encoded dot dot mixed case", "/a/%2E%2e/b", "dot segment at offset 3"},
	{"half encoded dot dot", "/a/.%2e/b", "dot segment at offset 3"},
	{"half encoded dot dot reversed", "/a/%2e./b", "dot segment at offset 3"},
	{"three dots", "/a/.../b", "segment of only dots and spaces at offset 3"},
	{"dot dot space", "/a/..%20/b", "segment of only dots and spaces at offset 3"},
	{"space segment", "/a/%20/b", "segment of only dots and spaces at offset 3"},

	{"raw space", "/a b", "character that must be percent-encoded at offset 2"},
	{"raw quote", `/a"b`, "character that must be percent-encoded at offset 2"},
	{"raw angle bracket", "/<script>", "character that must be percent-encoded at offset 1"},
	{"raw square bracket", "/a[0]", "character that must be percent-encoded at offset 2"},
}

func TestHTTPRefuses(t *testing.T) {
	for _, c := range httpRefusals {
		t.Run(c.name, func(t *testing.T) {
			p, err := HTTP(c.in)
			wantRefusal(t, "HTTP", err, c.want)
			if p.Segments != nil || p.Decoded != "" || p.Canonical != "" {
				t.Errorf("refusal returned a non-zero Path %+v", p)
			}
		})
	}
}

var httpAccepts = []struct {
	name, in  string
	segments  []string
	decoded   string
	canonical string
}{
	{"root", "/", []string{""}, "/", "/"},
	{"plain", "/v1/users/42", []string{"v1", "users", "42"}, "/v1/users/42", "/v1/users/42"},
	{"trailing slash kept", "/v1/users/", []string{"v1", "users", ""}, "/v1/users/", "/v1/users/"},
	{"encoded space", "/files/my%20file.txt", []string{"files", "my file.txt"}, "/files/my file.txt", "/files/my%20file.txt"},
	{"non-ASCII", "/files/na%C3%AFve", []string{"files", "naïve"}, "/files/naïve", "/files/na%C3%AFve"},
	{"lowercase hex", "/files/na%c3%afve", []string{"files", "naïve"}, "/files/naïve", "/files/na%C3%AFve"},
	{"emoji", "/%F0%9F%98%80", []string{"😀"}, "/😀", "/%F0%9F%98%80"},
	{"CJK", "/%E6%97%A5%E6%9C%AC", []string{"日本"}, "/日本", "/%E6%97%A5%E6%9C%AC"},
	{"sub-delims", "/a/!$&'()*+,=", []string{"a", "!$&'()*+,="}, "/a/!$&'()*+,=", "/a/!$&'()*+,="},
	{"at and colon", "/users/alice@example.com/keys/ssh:ed25519", []string{"users", "alice@example.com", "keys", "ssh:ed25519"}, "/users/alice@example.com/keys/ssh:ed25519", "/users/alice@example.com/keys/ssh:ed25519"},
	{"unreserved", "/a-b_c.d~e", []string{"a-b_c.d~e"}, "/a-b_c.d~e", "/a-b_c.d~e"},
	{"needlessly encoded unreserved", "/%41%62c/%7euser", []string{"Abc", "~user"}, "/Abc/~user", "/Abc/~user"},
	{"encoded sub-delims", "/a%21b%3Dc%40d", []string{"a!b=c@d"}, "/a!b=c@d", "/a!b=c@d"},
	{"encoded brackets", "/a%5b0%5d", []string{"a[0]"}, "/a[0]", "/a%5B0%5D"},
	{"encoded quotes", "/%22x%22", []string{`"x"`}, `/"x"`, "/%22x%22"},
	{"encoded dot inside a name", "/file%2Ejson", []string{"file.json"}, "/file.json", "/file.json"},
	{"dot-prefixed name", "/.well-known/openid-configuration", []string{".well-known", "openid-configuration"}, "/.well-known/openid-configuration", "/.well-known/openid-configuration"},
	{"RFC 5.4.2 g.", "/b/c/g.", []string{"b", "c", "g."}, "/b/c/g.", "/b/c/g."},
	{"RFC 5.4.2 .g", "/b/c/.g", []string{"b", "c", ".g"}, "/b/c/.g", "/b/c/.g"},
	{"RFC 5.4.2 g..", "/b/c/g..", []string{"b", "c", "g.."}, "/b/c/g..", "/b/c/g.."},
	{"RFC 5.4.2 ..g", "/b/c/..g", []string{"b", "c", "..g"}, "/b/c/..g", "/b/c/..g"},
}

func TestHTTPAccepts(t *testing.T) {
	for _, c := range httpAccepts {
		t.Run(c.name, func(t *testing.T) {
			p, err := HTTP(c.in)
			if err != nil {
				t.Fatalf("HTTP(%q): %v", c.in, err)
			}
			if !slices.Equal(p.Segments, c.segments) {
				t.Errorf("Segments = %q, want %q", p.Segments, c.segments)
			}
			if p.Decoded != c.decoded {
				t.Errorf("Decoded = %q, want %q", p.Decoded, c.decoded)
			}
			if p.Canonical != c.canonical {
				t.Errorf("Canonical = %q, want %q", p.Canonical, c.canonical)
			}
			checkPath(t, c.in, p)
		})
	}
}

var argRefusals = []struct{ name, in, want string }{
	{"invalid UTF-8", "a/\xff", "invalid UTF-8 at offset 2"},
	{"raw overlong dots", "\xc0\xae\xc0\xae/etc", "invalid UTF-8 at offset 0"},
	{"NUL", "a\x00b", "control character at offset 1"},
	{"newline", "a\nb", "control character at offset 1"},
	{"C1 NEL", "a\u0085b", "control character at offset 1"},
	{"zero width space", "..\u200b/etc", "invisible format character at offset 2"},
	{"backslash", `..\etc`, "backslash at offset 2"},
	{"windows path", `C:\Windows`, "backslash at offset 2"},

	{"fullwidth dots", "\uff0e\uff0e/etc", "not NFKC-normalized at offset 0"},
	{"fullwidth solidus", "..\uff0fetc", "not NFKC-normalized"},
	{"one dot leaders", "\u2024\u2024/etc", "not NFKC-normalized at offset 0"},
	{"decomposed accent", "nai\u0308ve", "not NFKC-normalized"},

	{"percent-encoded dots", "%2e%2e/etc", "percent-encoded dot at offset 0"},
	{"percent-encoded dots upper", "a/%2E%2E/b", "percent-encoded dot at offset 2"},
	{"percent-encoded dot in a name", "file%2ejson", "percent-encoded dot at offset 4"},
	{"percent-encoded slash", "..%2fetc", "percent-encoded slash at offset 2"},
	{"percent-encoded slash upper", "a%2Fb", "percent-encoded slash at offset 1"},
	{"percent-encoded backslash", "..%5Cetc", "percent-encoded backslash at offset 2"},
	{"double encoded dots", "%252e%252e/etc", "percent-encoded percent (%25) at offset 0"},
	{"percent-encoded NUL", "a%00", "percent-encoding (send the decoded text) at offset 1"},
	{"percent-encoded overlong dots", "%c0%ae%c0%ae/etc", "percent-encoding (send the decoded text) at offset 0"},
	{"percent-encoded fullwidth dots", "%EF%BC%8E%EF%BC%8E/etc", "percent-encoding (send the decoded text) at offset 0"},
	{"percent-encoded letter", "/srv/public/%73ecret", "percent-encoding (send the decoded text) at offset 12"},
	{"percent-encoded space", "a%20b", "percent-encoding (send the decoded text) at offset 1"},
	{"percent-encoded dot dot space", "a/..%20", "percent-encoding (send the decoded text) at offset 4"},
	{"escape after a bare percent", "%%341", "percent-encoding (send the decoded text) at offset 1"},

	{"dot", ".", "dot segment at offset 0"},
	{"dot dot", "..", "dot segment at offset 0"},
	{"leading dot", "./a", "dot segment at offset 0"},
	{"parent", "../etc/passwd", "dot segment at offset 0"},
	{"inner parent", "a/../b", "dot segment at offset 2"},
	{"absolute inner parent", "/srv/../etc", "dot segment at offset 5"},
	{"trailing dot", "a/.", "dot segment at offset 2"},
	{"three dots", "a/...", "segment of only dots and spaces at offset 2"},
	{"dot dot space", ".. /x", "segment of only dots and spaces at offset 0"},

	{"empty segment", "a//b", "empty segment at offset 2"},
	{"leading double slash", "//srv", "empty segment at offset 1"},
	{"double slash only", "//", "empty segment at offset 1"},
	{"trailing slash", "dir/", "trailing slash at offset 3"},
	{"absolute trailing slash", "/srv/", "trailing slash at offset 4"},
}

func TestArgRefuses(t *testing.T) {
	for _, c := range argRefusals {
		t.Run(c.name, func(t *testing.T) {
			wantRefusal(t, "Arg", Arg(c.in), c.want)
		})
	}
}

var argAccepts = []struct{ name, in string }{
	{"empty", ""},
	{"root", "/"},
	{"name", "a"},
	{"relative", "a/b"},
	{"absolute", "/srv/data/report.txt"},
	{"dotted name", "file.json"},
	{"hidden file", ".hidden"},
	{"trailing dot in a name", "a./b"},
	{"RFC 5.4.2 ..g", "..g"},
	{"RFC 5.4.2 g..", "g.."},
	{"non-ASCII", "naïve.txt"},
	{"CJK", "日本/ファイル"},
	{"bare percent", "100%"},
	{"percent not an escape", "50%off"},
	{"percent with one hex digit", "a%2"},
	{"colon and at", "user@host:path"},
	{"drive letter with slashes", "C:/Users/x"},
	{"semicolon", "a;b=c"},
	{"tilde", "~/notes"},
}

func TestArgAccepts(t *testing.T) {
	for _, c := range argAccepts {
		t.Run(c.name, func(t *testing.T) {
			if err := Arg(c.in); err != nil {
				t.Fatalf("Arg(%q): %v", c.in, err)
			}
			checkArg(t, c.in)
		})
	}
}

func wantRefusal(t *testing.T, fn string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s accepted, want refusal %q", fn, want)
	}
	if !errors.Is(err, ErrNotCanonical) {
		t.Errorf("%s error %v does not wrap ErrNotCanonical", fn, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s error = %q, want it to contain %q", fn, err, want)
	}
	checkMessage(t, err)
}

// checkMessage asserts that a refusal is fit to show a client: short,
// printable ASCII, built from fixed reasons rather than the input.
func checkMessage(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if !strings.HasPrefix(msg, "canonpath: path is not canonical: ") || len(msg) > 120 {
		t.Errorf("message %q is not the expected short form", msg)
	}
	for i := 0; i < len(msg); i++ {
		if msg[i] < 0x20 || msg[i] > 0x7e {
			t.Fatalf("message %q has a byte outside printable ASCII", msg)
		}
	}
}

// checkPath asserts everything Path promises about p, the result of
// HTTP(in).
func checkPath(t *testing.T, in string, p Path) {
	t.Helper()
	if len(p.Segments) == 0 {
		t.Fatalf("HTTP(%q): no segments", in)
	}
	if want := "/" + strings.Join(p.Segments, "/"); p.Decoded != want {
		t.Fatalf("HTTP(%q): Decoded %q, want %q", in, p.Decoded, want)
	}
	for i, s := range p.Segments {
		if s == "" && i != len(p.Segments)-1 {
			t.Fatalf("HTTP(%q): empty segment %d", in, i)
		}
		if strings.ContainsAny(s, `/\%;?#`) || dotReason(s) != "" {
			t.Fatalf("HTTP(%q): segment %q", in, s)
		}
		if k, r := badRune(s); k >= 0 {
			t.Fatalf("HTTP(%q): segment %q: %s", in, s, r)
		}
	}
	if !norm.NFKC.IsNormalString(p.Decoded) {
		t.Fatalf("HTTP(%q): Decoded %q is not NFKC-normalized", in, p.Decoded)
	}
	// No dot or empty segments: Clean changes nothing but a trailing slash.
	if want := p.Decoded; path.Clean(want) != strings.TrimSuffix(want, "/") && want != "/" {
		t.Fatalf("HTTP(%q): path.Clean(%q) = %q", in, want, path.Clean(want))
	}
	if !strings.Contains(in, "%") && p.Canonical != in {
		t.Fatalf("HTTP(%q): Canonical %q differs from an input without escapes", in, p.Canonical)
	}

	// Canonical escapes exactly the bytes outside keep, in uppercase hex,
	// and none of them is one that a second decoding would act on.
	c := p.Canonical
	for i := 0; i < len(c); i++ {
		switch {
		case c[i] == '/' || keep[c[i]]:
		case c[i] == '%':
			if i+2 >= len(c) || !strings.ContainsRune(upperHex, rune(c[i+1])) || !strings.ContainsRune(upperHex, rune(c[i+2])) {
				t.Fatalf("HTTP(%q): Canonical %q: bad escape at %d", in, c, i)
			}
			d, _ := escapeAt(c, i)
			if keep[d] || strings.IndexByte(`/\%.;?#`, d) >= 0 {
				t.Fatalf("HTTP(%q): Canonical %q escapes %q at %d", in, c, d, i)
			}
			i += 2
		default:
			t.Fatalf("HTTP(%q): Canonical %q has raw %q at %d", in, c, c[i], i)
		}
	}
	if d, err := url.PathUnescape(c); err != nil || d != p.Decoded {
		t.Fatalf("HTTP(%q): url.PathUnescape(%q) = %q, %v; want %q", in, c, d, err, p.Decoded)
	}

	// Idempotence: the canonical form is accepted and reads the same.
	q, err := HTTP(c)
	if err != nil {
		t.Fatalf("HTTP(%q): HTTP(Canonical %q): %v", in, c, err)
	}
	if !slices.Equal(q.Segments, p.Segments) || q.Decoded != p.Decoded || q.Canonical != c {
		t.Fatalf("HTTP(%q) = %+v, but HTTP(its Canonical) = %+v", in, p, q)
	}

	// net/url, which builds the request the gateway forwards, keeps the
	// canonical bytes and reads the same decoded path from them.
	u, err := url.Parse("http://upstream" + c)
	if err != nil || u.Path != p.Decoded || u.EscapedPath() != c {
		t.Fatalf("url.Parse(%q): Path %q, EscapedPath %q, err %v", c, u.Path, u.EscapedPath(), err)
	}
}

// checkArg asserts what Arg promises about an accepted p.
func checkArg(t *testing.T, p string) {
	t.Helper()
	if p == "" {
		return
	}
	if path.Clean(p) != p {
		t.Fatalf("Arg accepted %q, but path.Clean gives %q", p, path.Clean(p))
	}
	if !utf8.ValidString(p) || strings.ContainsRune(p, '\\') || !norm.NFKC.IsNormalString(p) {
		t.Fatalf("Arg accepted %q", p)
	}
	for _, s := range strings.Split(p, "/") {
		if s == "." || s == ".." {
			t.Fatalf("Arg accepted %q with segment %q", p, s)
		}
	}
	// A tool that URL-decodes the argument reads what policy read.
	if d, err := url.PathUnescape(p); err == nil && d != p {
		t.Fatalf("Arg accepted %q, which decodes to %q", p, d)
	}
}
