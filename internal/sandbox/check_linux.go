package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	seccomp "github.com/elastic/go-seccomp-bpf"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Support is what the running kernel can enforce.
type Support struct {
	UserNamespaces bool
	Landlock       int // ABI version; 0: none
	Seccomp        bool
	Cgroups        string // "v2", "v1", or "" with CgroupsErr
	CgroupsErr     error
	Runsc          string // gVisor's runsc, if installed
}

// Check reports what this kernel supports.
func Check() Support {
	var s Support
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) != "0" {
		s.UserNamespaces = true
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" && os.Getuid() != 0 {
		s.UserNamespaces = false
	}
	if abi, err := llsys.LandlockGetABIVersion(); err == nil {
		s.Landlock = abi
	}
	s.Seccomp = seccomp.Supported()
	switch v2, err := cgroupLayout(); {
	case err != nil:
		s.CgroupsErr = err
	case v2:
		s.Cgroups = "v2"
	default:
		s.Cgroups = "v1"
	}
	if p, err := exec.LookPath("runsc"); err == nil {
		s.Runsc = p
	}
	return s
}

// Enforce refuses a kernel that cannot enforce every layer: a sandbox is
// never silently weaker than its profile says.
func (s Support) Enforce() error {
	var errs []error
	if !s.UserNamespaces {
		errs = append(errs, errors.New("user namespaces are disabled"))
	}
	if s.Landlock < 1 {
		errs = append(errs, errors.New("Landlock is not enabled (CONFIG_SECURITY_LANDLOCK, lsm=landlock)"))
	}
	if !s.Seccomp {
		errs = append(errs, errors.New("seccomp filters are not supported"))
	}
	if s.Cgroups == "" {
		errs = append(errs, fmt.Errorf("cgroups: %w", s.CgroupsErr))
	}
	if len(errs) > 0 {
		return fmt.Errorf("sandbox: this kernel cannot enforce a sandbox: %w", errors.Join(errs...))
	}
	return nil
}

// Lines describes the support for people, one layer per line.
func (s Support) Lines() []string {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "NO"
	}
	ll := "NO"
	if s.Landlock > 0 {
		ll = fmt.Sprintf("ABI %d", s.Landlock)
		if s.Landlock >= 4 {
			ll += " (filesystem and TCP)"
		} else {
			ll += " (filesystem only: no TCP rules before ABI 4)"
		}
	}
	cg := s.Cgroups
	if cg == "" {
		cg = "NO (" + s.CgroupsErr.Error() + ")"
	}
	runsc := s.Runsc
	if runsc == "" {
		runsc = "not installed"
	}
	return []string{
		"user namespaces:  " + yes(s.UserNamespaces),
		"landlock:         " + ll,
		"seccomp:          " + yes(s.Seccomp),
		"cgroups:          " + cg,
		"gVisor (runsc):   " + runsc,
	}
}
