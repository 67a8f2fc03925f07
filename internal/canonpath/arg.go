package canonpath

import (
	"path"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// Arg checks p, a tool argument that names a path (a file path, or a
// URL-ish path given as a plain string), and returns nil if it is
// canonical. The empty string is accepted: whether a missing path is
// allowed is for policy to decide. Otherwise it refuses, with an error
// wrapping ErrNotCanonical:
//
//   - invalid UTF-8, control characters, invisible format characters, and
//     backslash;
//   - any percent-encoding (%HH, in either case): policy reads p as
//     written, but a tool that URL-decodes it reads another path. %2e, %2F,
//     %5c and %25 change its segments; any other escape changes a name
//     ("%73ecret" is "secret" to the tool, not to a policy that forbids
//     "secret"). The agent sends the decoded text instead, and a tool that
//     needs a URL encodes it. A '%' not followed by two hex digits ("100%")
//     has one reading and is accepted;
//   - text that is not NFKC-normalized (fullwidth dots and slashes, U+2024);
//   - "." and ".." segments, and segments of only dots and spaces; "." is
//     refused too, since policy cannot know what directory it names;
//   - empty segments ("a//b");
//   - a trailing slash ("dir/"): unlike HTTP, a file path has one spelling,
//     and "link/" follows a symbolic link where "link" does not, so policy
//     on one would govern the other. The root "/" is accepted;
//   - anything else that path.Clean would change.
func Arg(p string) error {
	if p == "" {
		return nil
	}
	if k, r := badRune(p); k >= 0 {
		return refuse(r, k)
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' {
			return refuse("backslash", i)
		}
		if d, ok := escapeAt(p, i); ok {
			return refuse(escapeReason(d), i)
		}
	}
	if !isASCII(p) && !norm.NFKC.IsNormalString(p) {
		return refuse("not NFKC-normalized", norm.NFKC.QuickSpanString(p))
	}
	for off := 0; ; {
		seg, last := p[off:], true
		if i := strings.IndexByte(seg, '/'); i >= 0 {
			seg, last = seg[:i], false
		}
		switch {
		case seg == "" && off == 0:
			// The leading slash of an absolute path.
		case seg == "" && last && p != "/":
			return refuse("trailing slash", off-1)
		case seg == "" && !last:
			return refuse("empty segment", off)
		}
		if r := dotReason(seg); r != "" {
			return refuse(r, off)
		}
		if last {
			break
		}
		off += len(seg) + 1
	}
	// The checks above should leave nothing for Clean to change; this is
	// the rule itself, kept as the backstop.
	if path.Clean(p) != p {
		return refuse("not a clean path", 0)
	}
	return nil
}

// escapeReason names the refusal of an escape in a tool argument that
// decodes to d, singling out the ones that change the path's segments.
func escapeReason(d byte) string {
	switch d {
	case '.':
		return "percent-encoded dot"
	case '/':
		return "percent-encoded slash"
	case '\\':
		return "percent-encoded backslash"
	case '%':
		return "percent-encoded percent (%25)"
	}
	return "percent-encoding (send the decoded text)"
}
