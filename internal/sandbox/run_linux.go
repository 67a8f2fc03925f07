package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Confined is a command prepared by Wrap.
type Confined struct {
	// OnViolation, if set before Started, is told of every system call
	// the sandbox refuses (from the supervisor's goroutine).
	OnViolation func(Violation)
	// ServeEgress, for a profile with egress: proxy, serves the proxy's
	// listening socket and the DNS stub's (both inside the sandbox's
	// network namespace) until they are closed: Close closes them.
	// Without it, both are closed and every connection and name refused.
	ServeEgress func(proxy net.Listener, dns net.PacketConn)

	cmd     *exec.Cmd
	spec    spec
	specW   *os.File
	specR   *os.File
	supIn   *os.File // the supervisor's end of the socket pair
	supOut  *os.File // the sandbox's end (fd 4)
	stop    chan struct{}
	cg      *cgroup
	started bool

	mu     sync.Mutex
	closed bool
	proxy  net.Listener
	dns    net.PacketConn
}

// nobody is the host uid a sandbox's root maps to when the gateway runs
// as root: files on the host are then the confined process's only by
// their "other" permissions.
const nobody = 65534

// Wrap rewrites cmd to run confined by p: this program run again (see
// MaybeInit) in new namespaces, which sets the layers up and executes
// cmd.Args (cmd.Path is looked up again inside, on the profile's PATH;
// cmd.Env is replaced by the profile's). Start cmd, then call Started;
// after Wait, Close.
func Wrap(cmd *exec.Cmd, p Profile) (*Confined, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(cmd.Args) == 0 {
		return nil, errors.New("sandbox: no command")
	}
	if err := Check().Enforce(); err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "bulkhead-sandbox-root-")
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	cg, err := newCgroup(p)
	if err != nil {
		os.Remove(root)
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		cg.remove()
		os.Remove(root)
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		r.Close()
		w.Close()
		cg.remove()
		os.Remove(root)
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	c := &Confined{cmd: cmd, spec: spec{Profile: p, Argv: cmd.Args, Dir: cmd.Dir, Root: root}, specW: w, specR: r, cg: cg,
		supIn: os.NewFile(uintptr(pair[0]), "supervisor"), supOut: os.NewFile(uintptr(pair[1]), "sandbox"), stop: make(chan struct{})}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = nobody, nobody
	}
	cmd.Path = "/proc/self/exe"
	cmd.Args = []string{"bulkhead-sandbox"}
	cmd.Env = []string{envInit + "=1"}
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{r, c.supOut}
	attr := cmd.SysProcAttr
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC |
		syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET | syscall.CLONE_NEWCGROUP
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	attr.GidMappingsEnableSetgroups = false
	// Become the namespace's root (whoever that maps to on the host): it
	// holds the namespace's capabilities until it drops them all.
	attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = attr
	return c, nil
}

// Started puts the started process in its cgroup and lets it set up the
// sandbox and run the command. On error the process is killed.
func (c *Confined) Started() error {
	c.specR.Close()
	c.supOut.Close()
	c.started = true
	go c.receiveListener()
	err := c.cg.add(c.cmd.Process.Pid)
	if err == nil {
		var b []byte
		if b, err = json.Marshal(c.spec); err == nil {
			_, err = c.specW.Write(b)
		}
	}
	c.specW.Close()
	if err != nil {
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}

// Close ends whatever the sandbox left running and removes its cgroup and
// root directory. Call it after the command has been waited for.
func (c *Confined) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.proxy != nil {
		c.proxy.Close()
		c.dns.Close()
	}
	c.specR.Close()
	c.specW.Close()
	c.supOut.Close()
	if !c.started {
		c.supIn.Close() // else receiveListener closes it
	}
	close(c.stop)
	c.cg.kill()
	c.cg.remove()
	_ = os.Remove(c.spec.Root)
}

// receiveListener takes the seccomp listener the sandbox hands over and
// supervises it.
func (c *Confined) receiveListener() {
	defer c.supIn.Close()
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(3*4))
	_, oobn, _, _, err := unix.Recvmsg(int(c.supIn.Fd()), buf, oob, 0)
	if err != nil || oobn == 0 {
		return // the sandbox ended before it got that far
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || (len(fds) != 1 && len(fds) != 3) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return
	}
	if len(fds) == 3 {
		c.serveProxy(os.NewFile(uintptr(fds[1]), "egress-proxy"), os.NewFile(uintptr(fds[2]), "dns-stub"))
	}
	report := c.OnViolation
	if report == nil {
		report = func(Violation) {}
	}
	supervise(os.NewFile(uintptr(fds[0]), "seccomp-listener"), c.stop, report)
}

// serveProxy hands the egress proxy's and DNS stub's sockets to
// ServeEgress.
func (c *Confined) serveProxy(proxy, dns *os.File) {
	l, err := net.FileListener(proxy)
	proxy.Close()
	pc, perr := net.FilePacketConn(dns)
	dns.Close()
	c.mu.Lock()
	if err != nil || perr != nil || c.closed || c.ServeEgress == nil {
		c.mu.Unlock()
		if l != nil {
			l.Close()
		}
		if pc != nil {
			pc.Close()
		}
		return
	}
	c.proxy, c.dns = l, pc
	c.mu.Unlock()
	go c.ServeEgress(l, pc)
}
