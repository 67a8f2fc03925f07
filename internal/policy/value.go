package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// maxDepth bounds the nesting of JSON converted to Cedar values.
const maxDepth = 32

// InputFromJSON converts a tool call's JSON arguments (an object) to the
// record policies see as context.input. Arguments are plain data: numbers
// become Long (or decimal if fractional), objects records, arrays sets; the
// __entity and __extn escapes are not interpreted, so an agent cannot shape
// its arguments into entity references. Empty or null input is {}.
func InputFromJSON(b []byte) (cedar.Record, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return cedar.NewRecord(nil), nil
	}
	v, err := decodeJSON(b)
	if err != nil {
		return cedar.Record{}, err
	}
	if v == nil {
		return cedar.NewRecord(nil), nil
	}
	if _, ok := v.(map[string]any); !ok {
		return cedar.Record{}, fmt.Errorf("%w: tool input must be a JSON object", fault.Invalid)
	}
	cv, err := toCedar(v, false, 0)
	if err != nil {
		return cedar.Record{}, fmt.Errorf("tool input: %w", err)
	}
	return cv.(cedar.Record), nil
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %w", fault.Invalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one JSON value", fault.Invalid)
	}
	return v, nil
}

// toCedar converts decoded JSON (numbers as json.Number). With escapes, an
// object {"__entity": {"type": T, "id": I}} is an entity reference and
// {"__extn": {"fn": F, "arg": A}} an extension value (decimal, ip,
// datetime, duration), as in Cedar's JSON formats.
func toCedar(v any, escapes bool, depth int) (cedar.Value, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: JSON nested deeper than %d", fault.Invalid, maxDepth)
	}
	switch t := v.(type) {
	case nil:
		return nil, fmt.Errorf("%w: null has no Cedar value; omit the attribute instead", fault.Invalid)
	case bool:
		return cedar.Boolean(t), nil
	case string:
		return cedar.String(t), nil
	case json.Number:
		return number(t)
	case []any:
		vals := make([]cedar.Value, 0, len(t))
		for _, e := range t {
			cv, err := toCedar(e, escapes, depth+1)
			if err != nil {
				return nil, err
			}
			vals = append(vals, cv)
		}
		return cedar.NewSet(vals...), nil
	case map[string]any:
		if escapes && len(t) == 1 {
			if e, ok := t["__entity"]; ok {
				return entityEscape(e)
			}
			if e, ok := t["__extn"]; ok {
				return extnEscape(e)
			}
		}
		m := make(cedar.RecordMap, len(t))
		for k, e := range t {
			if e == nil {
				// JSON null means "no value": the attribute is absent,
				// which a policy tests with "has".
				continue
			}
			cv, err := toCedar(e, escapes, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			m[cedar.String(k)] = cv
		}
		return cedar.NewRecord(m), nil
	}
	return nil, fmt.Errorf("%w: unsupported JSON value %T", fault.Invalid, v)
}

// number converts a JSON number: an integer is a Long; a fraction with at
// most four decimal places a decimal; anything else (exponents, more
// precision, out of range) is refused rather than rounded, since a policy
// may compare it.
func number(n json.Number) (cedar.Value, error) {
	s := n.String()
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return cedar.Long(i), nil
	}
	if strings.ContainsAny(s, "eE") || !strings.Contains(s, ".") {
		return nil, fmt.Errorf("%w: number %s is out of range or not in plain decimal notation", fault.Invalid, s)
	}
	d, err := types.ParseDecimal(s)
	if err != nil {
		return nil, fmt.Errorf("%w: number %s does not fit a Cedar decimal (at most 4 decimal places)", fault.Invalid, s)
	}
	return d, nil
}

func entityEscape(v any) (cedar.Value, error) {
	m, ok := v.(map[string]any)
	typ, tok := m["type"].(string)
	id, iok := m["id"].(string)
	if !ok || !tok || !iok || len(m) != 2 {
		return nil, fmt.Errorf(`%w: __entity must be {"type": "...", "id": "..."}`, fault.Invalid)
	}
	et, err := newEntityType(typ)
	if err != nil {
		return nil, err
	}
	return cedar.NewEntityUID(et, cedar.String(id)), nil
}

func extnEscape(v any) (cedar.Value, error) {
	m, ok := v.(map[string]any)
	fn, fok := m["fn"].(string)
	arg, aok := m["arg"].(string)
	if !ok || !fok || !aok || len(m) != 2 {
		return nil, fmt.Errorf(`%w: __extn must be {"fn": "...", "arg": "..."}`, fault.Invalid)
	}
	var (
		out cedar.Value
		err error
	)
	switch fn {
	case "decimal":
		out, err = types.ParseDecimal(arg)
	case "ip":
		out, err = types.ParseIPAddr(arg)
	case "datetime":
		out, err = types.ParseDatetime(arg)
	case "duration":
		out, err = types.ParseDuration(arg)
	default:
		return nil, fmt.Errorf("%w: unknown extension function %q", fault.Invalid, fn)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s(%q): %w", fault.Invalid, fn, arg, err)
	}
	return out, nil
}
