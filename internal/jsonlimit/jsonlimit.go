// Package jsonlimit measures JSON before it is decoded, so that hostile
// input (nesting deep enough to exhaust a recursive decoder) is refused
// before any decoder recurses into it.
package jsonlimit

// Depth returns the deepest nesting of objects and arrays in b, skipping
// string contents. On invalid JSON the result is meaningless but still
// bounded by len(b).
func Depth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
