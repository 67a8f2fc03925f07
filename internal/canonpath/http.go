package canonpath

import (
	"strings"

	"golang.org/x/text/unicode/norm"
)

// Path is an HTTP request path that HTTP accepted.
//
// Invariant: HTTP(p.Canonical) succeeds and returns a Path equal to p
// (same Segments, Decoded and Canonical), and decoding p.Canonical once
// (url.PathUnescape) gives p.Decoded. Because no decoded segment contains
// '%', a second decoding changes nothing either.
type Path struct {
	// Segments are the decoded segments between the slashes. The last one
	// is empty when the path ends in '/': the root "/" is [""], and "/a/"
	// is ["a", ""], distinct from "/a" (["a"]), because upstreams route
	// them differently. No other segment is empty.
	Segments []string
	// Decoded is "/" + strings.Join(Segments, "/"): what policy reads.
	Decoded string
	// Canonical is Decoded with every byte outside ALPHA DIGIT "-._~" and
	// "!$&'()*+,=:@" percent-encoded in uppercase hex: what the gateway
	// forwards upstream, byte for byte.
	Canonical string
}

// HTTP checks escaped, a request path as received (the request-target up
// to '?', or r.URL.EscapedPath(), starting with "/"), decodes its
// percent-encodings once, and returns its segments and canonical form. It
// refuses, with an error wrapping ErrNotCanonical:
//
//   - invalid percent-encoding, and decoded bytes that are not UTF-8
//     (overlong forms such as %C0%AE included);
//   - control characters (C0, DEL, C1) and invisible format characters,
//     raw or decoded;
//   - backslash, raw or decoded (%5C);
//   - an encoded slash (%2F): segments are split on raw '/' only, and an
//     upstream that decodes before splitting would see other segments;
//   - a decoded '%' (%25: the input is double-encoded), '?', '#' or ';',
//     and a raw ';' (a path parameter, stripped by servlet containers);
//   - empty segments ("//"), except the last one: a trailing slash;
//   - "." and ".." segments however spelled ("%2e", ".%2E"), and segments
//     of only dots and spaces ("...", "..%20");
//   - segments whose decoding is not NFKC-normalized: fullwidth dots and
//     slashes, U+2024 ONE DOT LEADER, ligatures, NBSP, decomposed accents;
//   - any other byte outside RFC 3986 pchar, raw non-ASCII included:
//     clients must percent-encode it, and upstreams disagree on how raw
//     bytes above 0x7F are read.
//
// Percent-encoding of bytes that need none (%41, %7E) and lowercase hex
// are accepted; Canonical spells them the one canonical way.
func HTTP(escaped string) (Path, error) {
	if !strings.HasPrefix(escaped, "/") {
		return Path{}, refuse("path must start with /", 0)
	}
	segs := make([]string, 0, strings.Count(escaped, "/"))
	for off := 1; ; {
		raw, last := escaped[off:], true
		if i := strings.IndexByte(raw, '/'); i >= 0 {
			raw, last = raw[:i], false
		}
		seg, err := httpSegment(raw, off, last)
		if err != nil {
			return Path{}, err
		}
		segs = append(segs, seg)
		if last {
			break
		}
		off += len(raw) + 1
	}
	p := Path{Segments: segs, Decoded: escaped, Canonical: escaped}
	// Without escapes, every accepted byte is in keep, so the input is
	// already both its decoding and its canonical form.
	if strings.IndexByte(escaped, '%') >= 0 {
		p.Decoded = "/" + strings.Join(segs, "/")
		p.Canonical = canonical(segs, len(escaped))
	}
	return p, nil
}

// httpSegment decodes raw, the segment at offset off of the input, or
// refuses it.
func httpSegment(raw string, off int, last bool) (string, error) {
	if raw == "" {
		if last {
			return "", nil
		}
		return "", refuse("empty segment", off)
	}
	var buf strings.Builder // the decoding, begun at the first escape
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '%' {
			if !keep[c] {
				return "", refuse(rawReason(c), off+i)
			}
			if buf.Cap() > 0 {
				buf.WriteByte(c)
			}
			i++
			continue
		}
		d, ok := escapeAt(raw, i)
		if !ok {
			return "", refuse("invalid percent-encoding", off+i)
		}
		if r := decodedReason(d); r != "" {
			return "", refuse(r, off+i)
		}
		if buf.Cap() == 0 {
			buf.Grow(len(raw))
			buf.WriteString(raw[:i])
		}
		buf.WriteByte(d)
		i += 3
	}
	seg := raw
	if buf.Cap() > 0 {
		seg = buf.String()
	}
	if k, r := badRune(seg); k >= 0 {
		return "", refuse(r, off+srcOffset(raw, k))
	}
	if r := dotReason(seg); r != "" {
		return "", refuse(r, off)
	}
	// ASCII text is always NFKC-normalized, and skipping the check saves
	// its allocation on most segments. '/' neither composes nor reorders
	// with its neighbours, so segments that are each normalized make a
	// Decoded that is (checkPath asserts it).
	if !isASCII(seg) && !norm.NFKC.IsNormalString(seg) {
		k := norm.NFKC.QuickSpanString(seg)
		return "", refuse("not NFKC-normalized", off+srcOffset(raw, k))
	}
	return seg, nil
}

// rawReason says why c, outside keep and not '%', is refused unencoded.
func rawReason(c byte) string {
	switch {
	case c == '\\':
		return "backslash"
	case c == ';':
		return "path parameter (;)"
	case c == '?' || c == '#':
		return "query or fragment delimiter"
	case isControl(c):
		return "control character"
	case c >= 0x80:
		return "unencoded non-ASCII byte"
	}
	return "character that must be percent-encoded"
}

// decodedReason says why d, decoded from %HH, is refused, or "".
func decodedReason(d byte) string {
	switch {
	case d == '/':
		return "encoded slash (%2F)"
	case d == '\\':
		return "encoded backslash (%5C)"
	case d == '%':
		return "double encoding (%25)"
	case d == '?' || d == '#':
		return "encoded query or fragment delimiter"
	case d == ';':
		return "encoded path parameter (%3B)"
	case isControl(d):
		return "control character"
	}
	return ""
}

// canonical encodes decoded segments; n is a guess at the length.
func canonical(segs []string, n int) string {
	var b strings.Builder
	b.Grow(n)
	for _, s := range segs {
		b.WriteByte('/')
		for i := 0; i < len(s); i++ {
			if c := s[i]; keep[c] {
				b.WriteByte(c)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex[c>>4])
				b.WriteByte(upperHex[c&0xf])
			}
		}
	}
	return b.String()
}
