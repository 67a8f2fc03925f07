package sandbox

import (
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"
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
// with EPERM, clone3 with ENOSYS (its flags are behind a pointer the
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
				{Action: seccomp.ActionErrno, Names: denied},
				{Action: seccomp.ActionErrno, NamesWithCondtions: append(cloneNS, rawSockets...)},
				{Action: seccomp.Action(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)), Names: []string{"clone3"}},
			},
		},
	}
}

// loadFilter installs the filter on every thread of this process.
func loadFilter() error {
	if err := seccomp.LoadFilter(filter()); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}
