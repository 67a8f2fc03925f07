// Package canonpath accepts a path only if it is canonical, and refuses it
// otherwise.
//
// The gateway authorizes a request against the path it reads, then hands
// the request to an upstream that reads the path again. Wherever two
// readers can disagree, an attacker can make the path the policy saw
// differ from the path the upstream acts on: a backslash that one side
// treats as a separator, %2F that one side decodes before splitting,
// %252e decoded twice, overlong UTF-8 (%C0%AE) that a lenient decoder
// turns into '.', a fullwidth dot (U+FF0E) that NFKC turns into '.',
// ";jsessionid=..." that Tomcat strips, a NUL that ends a C string, and
// dot segments spelled in any of these ways. Guessing how each upstream
// resolves them is a losing game, so canonpath accepts only paths that
// every such reader reads the same way, and refuses the rest.
//
// HTTP checks a request path and returns its decoded segments and its
// Canonical encoding, which the gateway forwards byte for byte. Arg checks
// a path given as a tool argument. Neither repairs a path: repairing is
// one more reading that could disagree with the upstream's.
//
// Every refusal wraps ErrNotCanonical and names the reason and the byte
// offset in the input. It never quotes the input, so the message is safe
// to show to the client.
package canonpath

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// ErrNotCanonical is wrapped by every refusal of HTTP and Arg.
var ErrNotCanonical = errors.New("path is not canonical")

func refuse(reason string, offset int) error {
	return fmt.Errorf("canonpath: %w: %s at offset %d", ErrNotCanonical, reason, offset)
}

// keep marks the bytes that a path segment may carry unencoded: RFC 3986
// pchar (unreserved, sub-delims, ':' and '@') less ';', which Tomcat and
// other servlet containers take as the start of a path parameter and strip.
// HTTP accepts exactly these bytes raw and writes exactly these bytes raw
// in Canonical, so Canonical reads back as itself.
var keep = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~" + "!$&'()*+,=" + ":@" {
		t[c] = true
	}
	return t
}()

const upperHex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// escapeAt reports whether s[i:] starts with a well-formed %HH, and the
// byte it stands for.
func escapeAt(s string, i int) (byte, bool) {
	if i+2 >= len(s) || s[i] != '%' {
		return 0, false
	}
	hi, ok1 := unhex(s[i+1])
	lo, ok2 := unhex(s[i+2])
	return hi<<4 | lo, ok1 && ok2
}

// srcOffset maps index k of the once-decoded form of raw back to an offset
// in raw, so that a refusal found after decoding still points at the input.
// Only the error path calls it.
func srcOffset(raw string, k int) int {
	i := 0
	for j := 0; j < k && i < len(raw); j++ {
		if _, ok := escapeAt(raw, i); ok {
			i += 3
		} else {
			i++
		}
	}
	return i
}

// isASCII reports whether s is ASCII, which is always NFKC-normalized:
// testing that first spares norm's allocation on most paths.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isControl(c byte) bool { return c < 0x20 || c == 0x7f }

// badRune finds the first rune of s that no path should carry: invalid
// UTF-8 (which includes overlong forms and encoded surrogates, refused by
// package utf8), control characters (C0, DEL, C1), and invisible format
// characters and separators (Cf, Zl, Zp: zero-width spaces, bidi
// overrides, BOM, soft hyphen). The latter are refused because normalizers
// that drop default-ignorable characters (NFKC_Casefold, IDNA mapping) turn
// "..\u200b" into "..". It returns -1 if there is none.
func badRune(s string) (int, string) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if isControl(c) {
				return i, "control character"
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return i, "invalid UTF-8"
		case unicode.IsControl(r):
			return i, "control character"
		case unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp):
			return i, "invisible format character"
		}
		i += size
	}
	return -1, ""
}

// dotReason reports why seg, a decoded segment, may not be a name. Besides
// "." and "..", it refuses a segment of only dots and spaces ("...",
// ".. ", " "): Win32 path normalization, and servers built on it, trim
// trailing dots and spaces from a name, so such a segment can turn into a
// dot segment or vanish downstream.
func dotReason(seg string) string {
	if seg == "." || seg == ".." {
		return "dot segment"
	}
	for i := 0; i < len(seg); i++ {
		if seg[i] != '.' && seg[i] != ' ' {
			return ""
		}
	}
	if seg == "" {
		return ""
	}
	return "segment of only dots and spaces"
}
