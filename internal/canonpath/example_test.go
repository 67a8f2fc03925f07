package canonpath_test

import (
	"errors"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/canonpath"
)

func ExampleHTTP() {
	p, err := canonpath.HTTP("/v1/files/na%c3%afve%20notes")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q\n", p.Segments)
	fmt.Println(p.Decoded)
	fmt.Println(p.Canonical)

	_, err = canonpath.HTTP("/v1/files/..%2fsecrets")
	fmt.Println(err)
	fmt.Println(errors.Is(err, canonpath.ErrNotCanonical))
	// Output:
	// ["v1" "files" "naïve notes"]
	// /v1/files/naïve notes
	// /v1/files/na%C3%AFve%20notes
	// canonpath: path is not canonical: encoded slash (%2F) at offset 12
	// true
}

func ExampleArg() {
	for _, p := range []string{"/srv/data/report.txt", "/srv/data/../../etc/passwd", "%2e%2e/etc", "\uff0e\uff0e/etc", "dir/"} {
		fmt.Println(canonpath.Arg(p))
	}
	// Output:
	// <nil>
	// canonpath: path is not canonical: dot segment at offset 10
	// canonpath: path is not canonical: percent-encoded dot at offset 0
	// canonpath: path is not canonical: not NFKC-normalized at offset 0
	// canonpath: path is not canonical: trailing slash at offset 3
}
