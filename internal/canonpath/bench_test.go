package canonpath

import (
	"net/url"
	"testing"
)

// benchPaths are typical request paths. BenchmarkHTTP and BenchmarkURLParse
// run on the same ones, so the cost of canonpath reads beside the cost of
// the parse net/http already does for every request.
var benchPaths = []struct{ name, path string }{
	{"plain", "/v1/orgs/bulkhead/repos/gateway/issues/42"},
	{"encoded", "/v1/files/na%C3%AFve%20report%202024.pdf"},
}

func BenchmarkHTTP(b *testing.B) {
	for _, c := range benchPaths {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := HTTP(c.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkURLParse(b *testing.B) {
	for _, c := range benchPaths {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := url.Parse(c.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
