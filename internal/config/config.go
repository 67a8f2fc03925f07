// Package config fills command-line flags from the environment and a config
// file, so every setting has one name in three places: --data-dir on the
// command line, BULKHEAD_DATA_DIR in the environment, data-dir in the YAML
// file. The command line wins over the environment, which wins over the
// file, which wins over the flag's default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes every environment variable.
const EnvPrefix = "BULKHEAD_"

// EnvName returns the environment variable for a flag: data-dir →
// BULKHEAD_DATA_DIR.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// MaxFileSize bounds a config file.
const MaxFileSize = 1 << 20

// File is a parsed config file: top-level keys are flag names; commands may
// claim other keys for structured sections (a gateway's servers list).
type File struct {
	Path   string
	Values map[string]any
	// Raw is the file's bytes, for commands that decode structured
	// sections into their own types.
	Raw []byte
}

// ReadFile parses a YAML config file. An empty path returns an empty File.
func ReadFile(path string) (*File, error) {
	f := &File{Path: path, Values: map[string]any{}}
	if path == "" {
		return f, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("config: %s is over %d bytes", path, MaxFileSize)
	}
	return Parse(path, b)
}

// Parse parses config file contents; path is used in messages.
func Parse(path string, b []byte) (*File, error) {
	f := &File{Path: path, Values: map[string]any{}, Raw: b}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	// An empty file decodes as io.EOF: it is an empty config.
	if err := dec.Decode(&f.Values); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if f.Values == nil {
		f.Values = map[string]any{}
	}
	return f, nil
}

// Apply sets every flag in fs that was not given on the command line from
// the environment (via getenv) or, failing that, from the file. One file may
// serve several commands, so a key that is not a flag of this command is
// skipped; but a key that known does not recognize (a flag of no command, or
// a section no command claims) is an error, so a typo does not silently fall
// back to a default.
func Apply(fs *pflag.FlagSet, file *File, getenv func(string) (string, bool), known func(key string) bool) error {
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "help" || fl.Name == "config" {
			return
		}
		if v, ok := getenv(EnvName(fl.Name)); ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("config: %s: %w", EnvName(fl.Name), err))
			}
			return
		}
		if file == nil {
			return
		}
		v, ok := file.Values[fl.Name]
		if !ok {
			return
		}
		vals := []any{v}
		if list, isList := v.([]any); isList {
			vals = list
		}
		for _, item := range vals {
			if err := fs.Set(fl.Name, fmt.Sprint(item)); err != nil {
				errs = append(errs, fmt.Errorf("config: %s: key %q: %w", file.Path, fl.Name, err))
			}
		}
	})
	if file != nil {
		var unknown []string
		for k := range file.Values {
			if fs.Lookup(k) == nil && !known(k) {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		for _, k := range unknown {
			errs = append(errs, fmt.Errorf("config: %s: unknown key %q", file.Path, k))
		}
	}
	return errors.Join(errs...)
}
