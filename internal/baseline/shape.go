package baseline

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Shape is the shape of a call's arguments (a JSON object): each
// argument's name and kind, sorted by name, where a string is a path (its
// first two segments), a URL (its scheme and host) or a string of some
// size (up to 16, 256 or more bytes). "/srv/docs/a.md" and
// "/srv/docs/b.md" share a shape; "/home/u/.ssh/id_rsa" does not, nor
// does a query grown from words to a paragraph. Arguments that are not an
// object have no shape (""). At most 16 arguments count.
func Shape(input []byte) string {
	members, ok := scanObject(input)
	if !ok || len(members) == 0 {
		return ""
	}
	slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.name, b.name) })
	if len(members) > 16 {
		members = members[:16]
	}
	var b strings.Builder
	for i, m := range members {
		if i > 0 {
			b.WriteByte(';')
		}
		k := m.name
		if len(k) > 32 {
			k = k[:32]
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(kind(m.value))
	}
	return b.String()
}

type member struct {
	name  string
	value []byte
}

// scanObject splits a JSON object into its members without decoding
// their values: the hot path's shape needs only each value's first bytes
// (and a string's text). Anything not a well-formed object fails.
func scanObject(in []byte) ([]member, bool) {
	i := skipSpace(in, 0)
	if i >= len(in) || in[i] != '{' {
		return nil, false
	}
	var out []member
	i = skipSpace(in, i+1)
	if i < len(in) && in[i] == '}' {
		return nil, skipSpace(in, i+1) == len(in)
	}
	for {
		if i >= len(in) || in[i] != '"' {
			return nil, false
		}
		end, ok := skipString(in, i)
		if !ok {
			return nil, false
		}
		name, ok := unquote(in[i:end])
		if !ok {
			return nil, false
		}
		i = skipSpace(in, end)
		if i >= len(in) || in[i] != ':' {
			return nil, false
		}
		i = skipSpace(in, i+1)
		vend, ok := skipValue(in, i)
		if !ok {
			return nil, false
		}
		out = append(out, member{name: name, value: in[i:vend]})
		i = skipSpace(in, vend)
		if i >= len(in) {
			return nil, false
		}
		switch in[i] {
		case ',':
			i = skipSpace(in, i+1)
		case '}':
			return out, skipSpace(in, i+1) == len(in)
		default:
			return nil, false
		}
	}
}

func skipSpace(in []byte, i int) int {
	for i < len(in) && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at in[i].
func skipString(in []byte, i int) (int, bool) {
	for j := i + 1; j < len(in); j++ {
		switch in[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index after the value starting at in[i]: a
// string, or anything up to its matching bracket or the next delimiter.
func skipValue(in []byte, i int) (int, bool) {
	if i >= len(in) {
		return 0, false
	}
	switch in[i] {
	case '"':
		return skipString(in, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(in); j++ {
			switch in[j] {
			case '"':
				end, ok := skipString(in, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	}
	j := i
	for j < len(in) && in[j] != ',' && in[j] != '}' && in[j] != ' ' && in[j] != '\t' && in[j] != '\n' && in[j] != '\r' {
		j++
	}
	return j, j > i
}

// unquote decodes a JSON string; only one with escapes or non-ASCII
// bytes (which the decoder checks, as UTF-8) needs the decoder.
func unquote(q []byte) (string, bool) {
	plain := true
	for _, c := range q {
		if c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		return string(q[1 : len(q)-1]), true
	}
	var s string
	return s, json.Unmarshal(q, &s) == nil
}

// kind is a JSON value's shape.
func kind(v []byte) string {
	switch v[0] {
	case '{':
		return "obj"
	case '[':
		return "arr"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	case '"':
		s, ok := unquote(v)
		if !ok {
			return "str"
		}
		return stringKind(s)
	}
	return "num"
}

func stringKind(s string) string {
	switch {
	case strings.HasPrefix(s, "/") && (strings.Contains(s, "/../") || strings.HasSuffix(s, "/..")):
		// A path that climbs is its own shape, whatever it starts with.
		return "path:.."
	case strings.HasPrefix(s, "/"):
		segs := strings.SplitN(strings.TrimPrefix(s, "/"), "/", 3)
		if len(segs) > 2 {
			segs = segs[:2]
		}
		if len(segs) == 2 && !strings.Contains(strings.TrimPrefix(s, "/"+segs[0]+"/"), "/") {
			// A file directly in a top-level directory: its directory.
			segs = segs[:1]
		}
		return "path:/" + strings.Join(segs, "/")
	case strings.Contains(s, "://"):
		if u, err := url.Parse(s); err == nil && u.Scheme != "" {
			return "url:" + u.Scheme + "://" + u.Host
		}
	}
	switch {
	case len(s) <= 16:
		return "str:16"
	case len(s) <= 256:
		return "str:256"
	}
	return "str:long"
}
