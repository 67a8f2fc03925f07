package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
)

// envReplica carries a replica process's configuration (JSON replicaSpec).
const envReplica = "BULKHEAD_TEST_REPLICA"

type replicaSpec struct {
	Dir, Store, Listen string
	// Gateway is the in-process gateway's configuration file, if any.
	Gateway string
}

// MaybeServeReplica runs a control plane replica and never returns when
// this process was started by StartReplica: call it first in TestMain.
// A replica in its own process can be killed with SIGKILL, as a crashed
// machine would be.
func MaybeServeReplica() {
	v := os.Getenv(envReplica)
	if v == "" {
		return
	}
	var spec replicaSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	logf, err := os.OpenFile(filepath.Join(spec.Dir, "replica.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	srv, err := server.New(ctx, server.Config{DataDir: spec.Dir, Listen: spec.Listen, Store: spec.Store, GatewayConfig: spec.Gateway,
		TrustDomain: spiffeid.RequireTrustDomainFromString(server.DefaultTrustDomain)}, clock.Real{}, logger)
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	gw := "-"
	if a := srv.GatewayAddr(); a != "" {
		gw = a
	}
	fmt.Printf("replica-ready %s %s\n", srv.Addr(), gw)
	if err := srv.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Replica is a control plane replica in a process of its own (the test
// binary run again; its TestMain calls MaybeServeReplica).
type Replica struct {
	URL, Dir string
	// GatewayURL is the in-process gateway's, when it has one.
	GatewayURL string
	cmd        *exec.Cmd
	done       chan struct{}
}

// StartReplica starts a replica on store with data directory dir (see
// JoinDir) listening on listen, and waits until it serves. It is killed
// when the test ends.
func StartReplica(t testing.TB, dir, store, listen string) *Replica {
	t.Helper()
	return startReplica(t, replicaSpec{Dir: dir, Store: store, Listen: listen})
}

// StartServe starts `serve` in a process of its own on the embedded store
// in dir, with the in-process gateway configured by gatewayConfig, and
// waits until it serves. It is killed when the test ends.
func StartServe(t testing.TB, dir, gatewayConfig string) *Replica {
	t.Helper()
	return startReplica(t, replicaSpec{Dir: dir, Listen: "127.0.0.1:0", Gateway: gatewayConfig})
}

func startReplica(t testing.TB, s replicaSpec) *Replica {
	t.Helper()
	dir := s.Dir
	spec, _ := json.Marshal(s)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envReplica+"="+string(spec))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &Replica{Dir: dir, cmd: cmd, done: make(chan struct{})}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if addrs, ok := strings.CutPrefix(sc.Text(), "replica-ready "); ok {
				ready <- strings.Fields(addrs)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(r.Kill)
	select {
	case addrs := <-ready:
		r.URL = "https://" + addrs[0]
		if len(addrs) > 1 && addrs[1] != "-" {
			r.GatewayURL = "https://" + addrs[1]
		}
	case <-r.done:
		t.Fatalf("replica exited before serving: %s", stderr.String())
	case <-time.After(30 * time.Second):
		r.Kill()
		t.Fatalf("replica did not start: %s", stderr.String())
	}
	return r
}

// Addr is the replica's host:port, to start it again on the same address.
func (r *Replica) Addr() string { return strings.TrimPrefix(r.URL, "https://") }

// Kill ends the replica with SIGKILL (no shutdown of any kind) and waits
// for it to be gone.
func (r *Replica) Kill() {
	if r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// JoinDir prepares the data directory of a new replica of the control
// plane whose data directory is from, as docs/ha.md tells an operator to:
// only the master key is copied; the replica restores the CA's root and
// the audit key, sealed, from the shared database.
func JoinDir(t testing.TB, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, p := range []string{"master.key"} {
		if err := copyTree(filepath.Join(from, p), filepath.Join(to, p)); err != nil {
			t.Fatalf("join: copy %s: %v", p, err)
		}
	}
	return to
}

func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
}
