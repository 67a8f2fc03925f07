package jsonlimit

import (
	"strings"
	"testing"
)

func TestDepth(t *testing.T) {
	cases := []struct {
		in   string
		want int
	}{
		{`1`, 0},
		{`{}`, 1},
		{`{"a":[1,{"b":2}]}`, 3},
		{`{"a":"[[[[{{{{"}`, 1},
		{`{"a":"\"[[["}`, 1},
		{strings.Repeat("[", 100) + strings.Repeat("]", 100), 100},
	}
	for _, c := range cases {
		if got := Depth([]byte(c.in)); got != c.want {
			t.Errorf("Depth(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}
