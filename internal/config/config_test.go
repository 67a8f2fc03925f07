package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/bulkhead-dev/bulkhead/internal/config"
)

func flags() (*pflag.FlagSet, *string, *string, *[]string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	dataDir := fs.String("data-dir", "default-dir", "")
	listen := fs.String("listen", "127.0.0.1:8443", "")
	sans := fs.StringSlice("san", nil, "")
	return fs, dataDir, listen, sans
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPrecedenceFlagOverEnvOverFileOverDefault(t *testing.T) {
	file, err := config.Parse("c.yaml", []byte("data-dir: from-file\nlisten: 0.0.0.0:1\nsan: [a.example, 10.0.0.1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name             string
		args             []string
		env              map[string]string
		wantDir, wantLsn string
	}{
		{"file", nil, nil, "from-file", "0.0.0.0:1"},
		{"env beats file", nil, map[string]string{"BULKHEAD_DATA_DIR": "from-env"}, "from-env", "0.0.0.0:1"},
		{"flag beats env", []string{"--data-dir", "from-flag"}, map[string]string{"BULKHEAD_DATA_DIR": "from-env"}, "from-flag", "0.0.0.0:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, dir, listen, sans := flags()
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if err := config.Apply(fs, file, env(c.env), func(string) bool { return false }); err != nil {
				t.Fatal(err)
			}
			if *dir != c.wantDir || *listen != c.wantLsn {
				t.Fatalf("data-dir=%q listen=%q", *dir, *listen)
			}
			if strings.Join(*sans, ",") != "a.example,10.0.0.1" {
				t.Fatalf("san = %v", *sans)
			}
		})
	}
	fs, dir, _, _ := flags()
	if err := config.Apply(fs, nil, env(nil), nil); err != nil || *dir != "default-dir" {
		t.Fatalf("defaults: %q, %v", *dir, err)
	}
}

func TestUnknownKeysAndBadValuesAreErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
		env              map[string]string
	}{
		{"typo", "data_dir: x\n", `unknown key "data_dir"`, nil},
		{"bad env value", "", "BULKHEAD_SAN", map[string]string{"BULKHEAD_SAN": `"unterminated`}},
		{"not a map", "- a\n- b\n", "c.yaml", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file, err := config.Parse("c.yaml", []byte(c.yaml))
			if err == nil {
				fs, _, _, _ := flags()
				err = config.Apply(fs, file, env(c.env), func(k string) bool { return k == "servers" })
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want error containing %q", err, c.want)
			}
		})
	}
	// Keys that another command or a section claims are fine.
	file, _ := config.Parse("c.yaml", []byte("servers: []\ntrust-domain: x\n"))
	fs, _, _, _ := flags()
	if err := config.Apply(fs, file, env(nil), func(k string) bool { return k == "servers" || k == "trust-domain" }); err != nil {
		t.Fatal(err)
	}
}

func TestReadFile(t *testing.T) {
	if f, err := config.ReadFile(""); err != nil || len(f.Values) != 0 {
		t.Fatalf("no file: %v %v", f, err)
	}
	p := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := config.ReadFile(p); err != nil || len(f.Values) != 0 {
		t.Fatalf("empty file: %v %v", f, err)
	}
	if _, err := config.ReadFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
	if got := config.EnvName("trust-domain"); got != "BULKHEAD_TRUST_DOMAIN" {
		t.Fatalf("EnvName = %s", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("data-dir: x\nsan: [a]\n"))
	f.Add([]byte("servers:\n  - name: files\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := config.Parse("f.yaml", b)
		if err != nil {
			return
		}
		fs, _, _, _ := flags()
		_ = config.Apply(fs, file, env(nil), func(string) bool { return true })
	})
}
