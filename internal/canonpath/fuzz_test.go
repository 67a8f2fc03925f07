package canonpath

import (
	"errors"
	"testing"
)

// FuzzHTTP checks the invariant of Path on every input HTTP accepts:
// Canonical is accepted again and reads the same (idempotence), decodes
// once to Decoded, and holds nothing a second decoding would act on.
func FuzzHTTP(f *testing.F) {
	for _, c := range httpRefusals {
		f.Add(c.in)
	}
	for _, c := range httpAccepts {
		f.Add(c.in)
	}
	for _, c := range rfcDotCases {
		f.Add(c.merged)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := HTTP(in)
		if err != nil {
			if !errors.Is(err, ErrNotCanonical) {
				t.Fatalf("HTTP(%q): %v does not wrap ErrNotCanonical", in, err)
			}
			checkMessage(t, err)
			return
		}
		checkPath(t, in, p)
	})
}

// FuzzArg checks that every argument Arg accepts is clean, free of dot
// segments, and reads the same to a tool that URL-decodes it.
func FuzzArg(f *testing.F) {
	for _, c := range argRefusals {
		f.Add(c.in)
	}
	for _, c := range argAccepts {
		f.Add(c.in)
	}
	for _, c := range rfcDotCases {
		f.Add(c.ref)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if err := Arg(p); err != nil {
			if !errors.Is(err, ErrNotCanonical) {
				t.Fatalf("Arg(%q): %v does not wrap ErrNotCanonical", p, err)
			}
			checkMessage(t, err)
			return
		}
		checkArg(t, p)
	})
}
