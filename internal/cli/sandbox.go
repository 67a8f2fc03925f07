package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

func (e *env) sandboxCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run a command confined, or check what this kernel can enforce",
	}
	cmd.AddCommand(e.sandboxRunCmd(), e.sandboxCheckCmd())
	return cmd
}

func (e *env) sandboxRunCmd() *cobra.Command {
	var profile, dir string
	cmd := &cobra.Command{
		Use:   "run [--profile strict|FILE] -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox (namespaces, Landlock, seccomp, cgroups)",
		Long: `Run COMMAND confined: new user, mount, PID, IPC, UTS, network and cgroup
namespaces; a root holding only what the profile lists (read-only unless
under write:), a private /tmp, a fresh /proc and a minimal /dev; no
capabilities and no_new_privs; Landlock rules for the filesystem and TCP;
a seccomp filter; cgroup bounds on memory and processes. The command gets
only the profile's environment. Its exit status is this command's.

A profile file (YAML):

  read: [/usr, /lib, /lib64, /bin, /srv/docs]
  write: [/srv/out]
  egress: none
  memory: 268435456   # bytes
  pids: 64
  env: [PATH=/usr/bin:/bin]

'strict' (the default) lists the system's programs and libraries only.`,
		Example: `  bulkhead sandbox run -- /bin/ls /
  bulkhead sandbox run --profile tool.yaml -- node server.js`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := sandbox.LoadProfile(profile)
			if err != nil {
				return err
			}
			c := exec.Command(args[0], args[1:]...)
			c.Dir = dir
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, e.stdout, e.stderr
			conf, err := sandbox.Wrap(c, p)
			if err != nil {
				return err
			}
			defer conf.Close()
			if err := c.Start(); err != nil {
				return fmt.Errorf("sandbox: start: %w", err)
			}
			if err := conf.Started(); err != nil {
				return err
			}
			// Signals reach the sandbox's PID 1, the command itself.
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sig)
			go func() {
				for s := range sig {
					_ = c.Process.Signal(s)
				}
			}()
			err = c.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
				return exitError{code: code, err: fmt.Errorf("the sandboxed command ended: %v", ee)}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "strict", "strict, or a profile file")
	cmd.Flags().StringVar(&dir, "dir", "/", "the command's working directory, inside the sandbox")
	return cmd
}

func (e *env) sandboxCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Say which sandbox layers this kernel can enforce",
		Long: `Say which sandbox layers this kernel can enforce. Sandboxes refuse to start
where a layer is missing rather than run weaker than their profile says;
check exits non-zero then.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s := sandbox.Check()
			for _, l := range s.Lines() {
				fmt.Fprintln(e.stdout, l)
			}
			if err := s.Enforce(); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "ok: sandboxes can run here")
			return nil
		},
	}
}
