// Package reachtest builds frozen PDPs over worlds written by hand, for
// tests and benchmarks of analyses whose true answers are known by
// construction.
package reachtest

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TrustDomain is the worlds' trust domain.
var TrustDomain = spiffeid.RequireTrustDomainFromString("bulkhead.local")

// World is a deployment's policy side.
type World struct {
	// Policies maps file names to Cedar text.
	Policies map[string]string
	// Catalog is the tool catalog (YAML).
	Catalog string
	Agents  []policy.AgentRoles
	// Manifests are task manifests (YAML).
	Manifests []string
}

// Freeze compiles the world and returns its frozen PDP and manifests.
func (w World) Freeze(t testing.TB) (*policy.Frozen, []elevation.Manifest) {
	t.Helper()
	var files []policy.File
	for name, text := range w.Policies {
		files = append(files, policy.File{Name: name, Content: text})
	}
	set, err := policy.Compile(files)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := policy.ParseCatalog("tools.yaml", []byte(w.Catalog))
	if err != nil {
		t.Fatal(err)
	}
	var ms []elevation.Manifest
	var managed []policy.ManagedSet
	for _, y := range w.Manifests {
		m, err := elevation.ParseManifest([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		s, err := elevation.Compile(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		ms, managed = append(ms, m), append(managed, s)
	}
	f, err := policy.FreezeWorld(TrustDomain, set, w.Agents, cat, managed)
	if err != nil {
		t.Fatal(err)
	}
	return f, ms
}
