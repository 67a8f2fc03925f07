package audit_test

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

func agentID(name string) (string, error) {
	if name == "" || name == "bad/name" {
		return "", fmt.Errorf("bad agent name %q", name)
	}
	return "spiffe://test.local/agent/" + name, nil
}

func TestParseSearch(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		query string
		want  audit.Query
		err   bool
	}{
		{query: "", want: audit.Query{AfterSeq: -1, Limit: audit.DefaultSearchLimit}},
		{query: "agent=alpha&decision=deny&since=2026-01-02T03:04:05Z&limit=5&after=7&newest=true&action=a.b,c.d",
			want: audit.Query{AfterSeq: 7, Limit: 5, Subject: "spiffe://test.local/agent/alpha", Decision: audit.Deny,
				Since: since, Newest: true, Actions: []string{"a.b", "c.d"}}},
		{query: "subject=spiffe://test.local/operator/admin&until=2026-01-02T03:04:05Z",
			want: audit.Query{AfterSeq: -1, Limit: audit.DefaultSearchLimit, Subject: "spiffe://test.local/operator/admin", Until: since}},
		{query: "agent=alpha&subject=spiffe://x/y", err: true},
		{query: "agent=bad/name", err: true},
		{query: "subject=not-a-spiffe-id", err: true},
		{query: "decision=maybe", err: true},
		{query: "limit=0", err: true},
		{query: fmt.Sprintf("limit=%d", audit.MaxSearchLimit+1), err: true},
		{query: "after=-2", err: true},
		{query: "since=yesterday", err: true},
		{query: "newest=perhaps", err: true},
		{query: "limit=1&limit=2", err: true},
		{query: "color=blue", err: true},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			q, _ := url.ParseQuery(c.query)
			got, err := audit.ParseSearch(q, agentID)
			if c.err {
				if !errors.Is(err, fault.Invalid) {
					t.Fatalf("parse = %+v, %v; want an invalid-request error", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("parse = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestParseProofParams(t *testing.T) {
	inclusion := [][]string{{"seq", "size"}, {"seq"}}
	cases := []struct {
		query string
		want  audit.ProofParams
		err   bool
	}{
		{query: "seq=3&size=10", want: audit.ProofParams{Seq: 3, Size: 10}},
		{query: "seq=0", want: audit.ProofParams{}},
		{query: "size=10", err: true},
		{query: "seq=-1", err: true},
		{query: "seq=1e3", err: true},
		{query: "seq=99999999999999999999", err: true},
		{query: "seq=1&seq=2", err: true},
		{query: "seq=1&old=2", err: true},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			q, _ := url.ParseQuery(c.query)
			got, err := audit.ParseProofParams(q, inclusion[0], inclusion[1])
			if c.err {
				if !errors.Is(err, fault.Invalid) {
					t.Fatalf("parse = %+v, %v; want an invalid-request error", got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("parse = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func FuzzParseSearch(f *testing.F) {
	for _, s := range []string{"agent=alpha&decision=deny&since=2026-01-02T03:04:05Z", "limit=10&after=5&newest=1", "action=a,,b", "subject=spiffe://x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		got, err := audit.ParseSearch(q, agentID)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("error %v is not an invalid-request error", err)
			}
			return
		}
		if got.Limit < 1 || got.Limit > audit.MaxSearchLimit || got.AfterSeq < -1 || len(got.Actions) > 32 {
			t.Fatalf("parsed out of bounds: %+v", got)
		}
	})
}

func FuzzParseProofParams(f *testing.F) {
	for _, s := range []string{"seq=3&size=10", "old=1&new=5", "from=0&before=9", "seq=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		all := []string{"seq", "size", "old", "new", "from", "before"}
		p, err := audit.ParseProofParams(q, all, nil)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("error %v is not an invalid-request error", err)
			}
			return
		}
		for _, n := range []int64{p.Seq, p.Size, p.Old, p.New, p.From, p.Before} {
			if n < 0 {
				t.Fatalf("negative index parsed: %+v", p)
			}
		}
	})
}
