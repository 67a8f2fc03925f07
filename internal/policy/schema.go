package policy

import (
	"embed"
	"fmt"
	"maps"
	"slices"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	schemaast "github.com/cedar-policy/cedar-go/x/exp/schema/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

//go:embed schema/*.cedarschema
var schemaFS embed.FS

// Names of the embedded schema files.
const (
	baseSchemaFile  = "schema/bulkhead.cedarschema"
	inputSchemaFile = "schema/input.cedarschema"
	// toolInputType is the one declaration of the shipped schema that an
	// operator's fragment may replace rather than extend.
	toolInputType = "ToolInput"
)

// BaseSchema returns the text of the schema that ships with Bulkhead,
// including the default ToolInput.
func BaseSchema() string {
	a, _ := schemaFS.ReadFile(baseSchemaFile)
	b, _ := schemaFS.ReadFile(inputSchemaFile)
	return string(a) + "\n" + string(b)
}

// Schema is a resolved schema: Bulkhead's plus an operator's fragments.
type Schema struct {
	resolved  *resolved.Schema
	validator *validate.Validator
	// actions are the action entities the schema declares, with their
	// groups as parents: Cedar evaluates "action in Action::\"read\"" over
	// entities, so these must be present at evaluation time.
	actions map[cedar.EntityUID]cedar.Entity
}

// NewSchema builds the schema from Bulkhead's base and operator fragments
// (name → Cedar schema text). A fragment may add entity types, actions and
// namespaces, and may replace the ToolInput type; anything it declares twice
// is an error.
func NewSchema(fragments []File) (*Schema, error) {
	base, err := parseSchemaFile("bulkhead.cedarschema", baseSchemaFile)
	if err != nil {
		return nil, err
	}
	merged := base
	replacedInput := false
	for _, f := range fragments {
		var s schema.Schema
		s.SetFilename(f.Name)
		if err := s.UnmarshalCedar([]byte(f.Content)); err != nil {
			return nil, located(f.Name, err)
		}
		frag := s.AST()
		if _, ok := frag.CommonTypes[toolInputType]; ok {
			if replacedInput {
				return nil, &Error{File: f.Name, Msg: "type ToolInput is declared by more than one schema file"}
			}
			replacedInput = true
		}
		if err := mergeSchema(merged, frag); err != nil {
			return nil, &Error{File: f.Name, Msg: err.Error()}
		}
	}
	if !replacedInput {
		input, err := parseSchemaFile("input.cedarschema", inputSchemaFile)
		if err != nil {
			return nil, err
		}
		if err := mergeSchema(merged, input); err != nil {
			return nil, fmt.Errorf("policy: built-in schema: %w", err)
		}
	}
	r, err := schema.NewSchemaFromAST(merged).Resolve()
	if err != nil {
		return nil, &Error{File: "schema", Msg: err.Error()}
	}
	out := &Schema{resolved: r, validator: validate.New(r), actions: make(map[cedar.EntityUID]cedar.Entity, len(r.Actions))}
	for uid, a := range r.Actions {
		out.actions[uid] = a.Entity
	}
	return out, nil
}

func parseSchemaFile(name, path string) (*schemaast.Schema, error) {
	b, err := schemaFS.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: built-in schema: %w", err)
	}
	var s schema.Schema
	s.SetFilename(name)
	if err := s.UnmarshalCedar(b); err != nil {
		return nil, fmt.Errorf("policy: built-in schema: %w", err)
	}
	return s.AST(), nil
}

// mergeSchema adds src's declarations to dst, refusing duplicates.
func mergeSchema(dst, src *schemaast.Schema) error {
	if err := mergeDecls(&dst.Entities, src.Entities, &dst.Enums, src.Enums, &dst.Actions, src.Actions, &dst.CommonTypes, src.CommonTypes, ""); err != nil {
		return err
	}
	for path, ns := range src.Namespaces {
		if dst.Namespaces == nil {
			dst.Namespaces = schemaast.Namespaces{}
		}
		have, ok := dst.Namespaces[path]
		if !ok {
			dst.Namespaces[path] = ns
			continue
		}
		if err := mergeDecls(&have.Entities, ns.Entities, &have.Enums, ns.Enums, &have.Actions, ns.Actions, &have.CommonTypes, ns.CommonTypes, string(path)+"::"); err != nil {
			return err
		}
		dst.Namespaces[path] = have
	}
	return nil
}

func mergeDecls(de *schemaast.Entities, se schemaast.Entities, dn *schemaast.Enums, sn schemaast.Enums,
	da *schemaast.Actions, sa schemaast.Actions, dc *schemaast.CommonTypes, sc schemaast.CommonTypes, prefix string) error {
	if err := mergeMap(de, se, prefix, "entity type"); err != nil {
		return err
	}
	if err := mergeMap(dn, sn, prefix, "enum type"); err != nil {
		return err
	}
	if err := mergeMap(da, sa, prefix, "action"); err != nil {
		return err
	}
	return mergeMap(dc, sc, prefix, "common type")
}

func mergeMap[K ~string, V any, M ~map[K]V](dst *M, src M, prefix, what string) error {
	if len(src) == 0 {
		return nil
	}
	if *dst == nil {
		*dst = M{}
	}
	for _, k := range slices.Sorted(maps.Keys(src)) {
		if _, dup := (*dst)[k]; dup {
			return fmt.Errorf("%s %s%s is already declared (by Bulkhead's schema or another file)", what, prefix, k)
		}
		(*dst)[k] = src[k]
	}
	return nil
}

// validatePolicy checks one policy against the schema (strict mode).
func (s *Schema) validatePolicy(id cedar.PolicyID, p *cedar.Policy) error {
	return s.validator.Policy(string(id), (*xast.Policy)(p.AST()))
}

// knownType reports whether the schema declares an entity type.
func (s *Schema) knownType(t types.EntityType) bool {
	_, e := s.resolved.Entities[t]
	_, n := s.resolved.Enums[t]
	return e || n
}
