package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// denied are system calls a confined process never needs and an escape
// often does, after the container runtimes' default profile: tracing
// other processes, mounting and namespaces, kernel keyrings and modules,
// BPF, io_uring (which bypasses this filter's view of I/O),
// userfaultfd, perf events, clock and host administration.
var denied = []string{
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
	"mount", "umount2", "pivot_root", "unshare", "setns", "chroot",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
	"open_by_handle_at", "name_to_handle_at",
	"bpf", "keyctl", "add_key", "request_key", "userfaultfd",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "iopl", "ioperm",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "lookup_dcookie", "uselib", "ustat", "sysfs",
}

// namespaceFlags are clone's flags that would make new namespaces.
var namespaceFlags = []uint64{unix.CLONE_NEWNS, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, unix.CLONE_NEWUSER,
	unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWCGROUP, unix.CLONE_NEWTIME}

// filter is the seccomp policy: allow by default, refuse the calls above
// with EPERM (through the supervisor, which reports each as a violation), clone3 with ENOSYS (its flags are behind a pointer the
// filter cannot read; libc then falls back to clone, whose flags it can),
// clone with any namespace flag, and packet or raw sockets.
func filter() seccomp.Filter {
	var cloneNS, rawSockets []seccomp.NameWithConditions
	for _, f := range namespaceFlags {
		cloneNS = append(cloneNS, seccomp.NameWithConditions{Name: "clone",
			Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: f}}})
	}
	rawSockets = append(rawSockets,
		seccomp.NameWithConditions{Name: "socket", Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.Equal, Value: unix.AF_PACKET}}})
	// The type with every combination of its two flags: the filter
	// compares whole values.
	for _, flags := range []uint64{0, unix.SOCK_CLOEXEC, unix.SOCK_NONBLOCK, unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK} {
		rawSockets = append(rawSockets, seccomp.NameWithConditions{Name: "socket",
			Conditions: seccomp.ArgumentConditions{{Argument: 1, Operation: seccomp.Equal, Value: unix.SOCK_RAW | flags}}})
	}
	return seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionAllow,
			Syscalls: []seccomp.SyscallGroup{
				{Action: seccomp.ActionUserNotify, Names: denied},
				{Action: seccomp.ActionUserNotify, NamesWithCondtions: append(cloneNS, rawSockets...)},
				{Action: seccomp.Action(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)), Names: []string{"clone3"}},
			},
		},
	}
}

// loadFilter sets no_new_privs and installs the filter on every thread of
// this process, and returns the listener its refusals are reported on.
func loadFilter() (*os.File, error) {
	f := filter()
	insts, err := f.Policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("no_new_privs: %w", err)
	}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC|unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH|unix.SECCOMP_FILTER_FLAG_NEW_LISTENER,
		uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return nil, fmt.Errorf("seccomp: %w", errno)
	}
	return os.NewFile(fd, "seccomp-listener"), nil
}

// seccompNotif and seccompNotifResp are the kernel's struct seccomp_notif
// and seccomp_notif_resp.
type seccompNotif struct {
	ID    uint64
	PID   uint32
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// supervise answers every notification on listener with EPERM and
// reports it, until the sandbox's last process is gone or stop closes.
func supervise(listener *os.File, stop <-chan struct{}, report func(Violation)) {
	defer listener.Close()
	names := map[int]string{}
	if info, err := arch.GetInfo(""); err == nil {
		names = info.SyscallNumbers
	}
	wakeR, wakeW, err := os.Pipe()
	if err != nil {
		return
	}
	defer wakeR.Close()
	go func() { <-stop; wakeW.Close() }()
	for {
		fds := []unix.PollFd{{Fd: int32(listener.Fd()), Events: unix.POLLIN}, {Fd: int32(wakeR.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if fds[1].Revents != 0 || fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return
		}
		var n seccompNotif
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, listener.Fd(), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n))); e != 0 {
			if e == unix.EINTR || e == unix.ENOENT {
				continue // interrupted, or the caller died meanwhile
			}
			return
		}
		name := names[int(n.Nr)]
		if name == "" {
			name = fmt.Sprintf("syscall %d", n.Nr)
		}
		// Reported before the refused call returns: the evidence exists
		// before the process can act on the refusal.
		report(Violation{Syscall: name, PID: int(n.PID)})
		resp := seccompNotifResp{ID: n.ID, Error: -int32(unix.EPERM)}
		_, _, _ = unix.Syscall(unix.SYS_IOCTL, listener.Fd(), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&resp)))
	}
}
