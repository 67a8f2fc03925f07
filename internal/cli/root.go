// Package cli is the bulkhead command line: one file per noun, noun-verb
// commands, results on stdout and diagnostics on stderr, --json on every
// read command.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/config"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// env is what every command shares: I/O, the environment, and the global
// settings after config resolution.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) (string, bool)

	configPath  string
	dataDir     string
	server      string
	credentials string
	logLevel    string
	logFormat   string

	logger *slog.Logger
	file   *config.File
}

// sections are config-file keys that are not flags but structured blocks
// that a command reads itself.
var sections = map[string]bool{}

// Main runs the CLI and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) (string, bool)) int {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	root := e.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "bulkhead: %v\n", err)
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}

// exitError carries a specific exit code (e.g. a failing policy test run).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func (e *env) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "bulkhead",
		Short: "Zero Trust control plane and gateway for AI agents",
		Long: `Bulkhead gives every AI agent a cryptographic identity (an X.509-SVID),
authorizes every tool call it makes, and records the evidence.

Start the control plane with 'bulkhead serve'; on the same machine the
other commands find it and its operator credential without any setting.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		Version:           Version,
		PersistentPreRunE: e.prepare,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&e.configPath, "config", "", "YAML config file; keys are flag names (env BULKHEAD_CONFIG)")
	pf.StringVar(&e.dataDir, "data-dir", server.DefaultDataDir, "data directory of the control plane")
	pf.StringVar(&e.server, "server", "https://"+server.DefaultListen, "control plane URL; several replicas' URLs separated by commas fail over")
	pf.StringVar(&e.credentials, "credentials", "", "operator credential directory (default DATA-DIR/operator)")
	pf.StringVar(&e.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&e.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(e.serveCmd(), e.agentCmd())
	root.AddCommand(e.tokenCmd(), e.resourceCmd())
	root.AddCommand(e.gatewayCmd(), e.demoCmd())
	root.AddCommand(e.auditCmd())
	root.AddCommand(e.policyCmd(), e.toolCmd())
	root.AddCommand(e.secretCmd(), e.backupCmd(), e.restoreCmd())
	root.AddCommand(e.connectCmd(), e.sandboxCmd(), e.blastRadiusCmd(), e.assessCmd(), e.statusCmd())
	root.AddCommand(e.manifestCmd(), e.taskCmd(), e.elevationCmd(), e.operatorCmd())
	return root
}

// prepare resolves flags from the environment and the config file, then
// builds the logger.
func (e *env) prepare(cmd *cobra.Command, _ []string) error {
	if !cmd.Flags().Changed("config") {
		if v, ok := e.getenv(config.EnvName("config")); ok {
			e.configPath = v
		}
	}
	file, err := config.ReadFile(e.configPath)
	if err != nil {
		return err
	}
	e.file = file
	known := allFlags(cmd.Root())
	if err := config.Apply(cmd.Flags(), file, e.getenv, func(k string) bool { return known[k] || sections[k] }); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(e.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch e.logFormat {
	case "text":
		e.logger = slog.New(slog.NewTextHandler(e.stderr, opts))
	case "json":
		e.logger = slog.New(slog.NewJSONHandler(e.stderr, opts))
	default:
		return fmt.Errorf("--log-format must be text or json, not %q", e.logFormat)
	}
	if e.credentials == "" {
		e.credentials = filepath.Join(e.dataDir, "operator")
	}
	return nil
}

func allFlags(c *cobra.Command) map[string]bool {
	out := map[string]bool{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { out[f.Name] = true })
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(c)
	return out
}

// operator returns an API client authenticated by the operator credential.
func (e *env) operator() (*client.Client, error) {
	if !svidfile.Exists(e.credentials) {
		return nil, fmt.Errorf("no operator credential in %s: start 'bulkhead serve' (which creates it) or pass --credentials DIR", e.credentials)
	}
	return client.NewFromDir(e.server, e.credentials)
}

// OSEnv adapts os.LookupEnv.
func OSEnv(k string) (string, bool) { return os.LookupEnv(k) }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// firstServer is the first of the --server URLs, without a trailing
// slash: requests are built on it, and a client's failover transport
// sends them to whichever replica answers.
func firstServer(servers string) string {
	first, _, _ := strings.Cut(servers, ",")
	return strings.TrimRight(strings.TrimSpace(first), "/")
}
