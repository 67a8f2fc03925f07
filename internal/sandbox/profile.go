// Package sandbox runs a command confined, in layers that each hold on
// their own: new user, mount, PID, IPC, UTS, network and cgroup
// namespaces with a minimal root of what the profile lists; no
// capabilities and no_new_privs; Landlock rules for the filesystem and
// TCP; a seccomp filter; cgroup and rlimit bounds. The gateway runs stdio
// tool servers through it, and `bulkhead sandbox run` any command.
//
// The confined process is started as this program run again (see
// MaybeInit), which sets the layers up inside the new namespaces and then
// executes the command.
package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Profile says what a confined command may reach.
type Profile struct {
	// Read lists host paths (directories or files) visible read-only,
	// at the same path.
	Read []string `yaml:"read" json:"read,omitempty"`
	// Write lists host paths visible read-write.
	Write []string `yaml:"write" json:"write,omitempty"`
	// Egress is "none" (the default): the network namespace has only an
	// unconfigured loopback, and Landlock refuses every TCP connect and
	// bind. Or "proxy": the only way out is an HTTP proxy at
	// ProxyAddr inside, whose listening socket the sandbox hands to
	// whoever started it (Confined.ServeEgress) to decide each
	// connection; HTTP_PROXY and HTTPS_PROXY name it. Beside it a DNS
	// stub's socket at DNSAddr, which /etc/resolv.conf names, is handed
	// over the same way, to answer only the names its server allows.
	Egress string `yaml:"egress" json:"egress,omitempty"`
	// Memory bounds the process tree's memory in bytes (cgroup, and the
	// address space of each process); 0 is the default, 512 MiB.
	Memory int64 `yaml:"memory" json:"memory,omitempty"`
	// Pids bounds the number of processes and threads; default 64.
	Pids int64 `yaml:"pids" json:"pids,omitempty"`
	// Env is the command's whole environment (nothing is inherited).
	Env []string `yaml:"env" json:"env,omitempty"`
}

// Violation is a system call the sandbox refused.
type Violation struct {
	Syscall string
	PID     int // as the supervisor's PID namespace sees it
}

// Egress modes.
const (
	EgressNone  = "none"
	EgressProxy = "proxy"
)

// ProxyPort is the egress proxy's port on the sandbox's loopback.
const ProxyPort = 3128

// ProxyAddr is the egress proxy's address inside a sandbox.
const ProxyAddr = "127.0.0.1:3128"

// DNSPort and DNSAddr are the DNS stub's (UDP) inside a sandbox with
// egress through the proxy.
const (
	DNSPort = 53
	DNSAddr = "127.0.0.1:53"
)

// Defaults for a profile's bounds.
const (
	DefaultMemory = 512 << 20
	DefaultPids   = 64
)

// Strict is the profile a tool server gets unless it says otherwise: the
// system's programs and libraries read-only, nothing else of the host,
// no network.
func Strict() Profile {
	return Profile{Read: []string{"/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/ssl", "/etc/ca-certificates", "/etc/alternatives", "/etc/ld.so.cache"},
		Egress: "none"}
}

// ParseProfile reads a profile file (YAML).
func ParseProfile(b []byte) (Profile, error) {
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return Profile{}, fmt.Errorf("sandbox: profile: %w", err)
	}
	return p, p.Validate()
}

// LoadProfile reads name: "strict" or a profile file.
func LoadProfile(name string) (Profile, error) {
	if name == "" || name == "strict" {
		return Strict(), nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return Profile{}, fmt.Errorf("sandbox: profile: %w", err)
	}
	return ParseProfile(b)
}

// reserved are the paths the sandbox itself provides inside.
var reserved = []string{"/", "/proc", "/dev", "/tmp"}

// Validate checks the profile and fills its defaults.
func (p *Profile) Validate() error {
	var errs []error
	for _, list := range [][]string{p.Read, p.Write} {
		for _, path := range list {
			switch {
			case !filepath.IsAbs(path) || filepath.Clean(path) != path:
				errs = append(errs, fmt.Errorf("sandbox: profile: %q must be an absolute, clean path", path))
			case contains(reserved, path) || strings.HasPrefix(path, "/proc/") || strings.HasPrefix(path, "/dev/"):
				errs = append(errs, fmt.Errorf("sandbox: profile: %q is the sandbox's own", path))
			}
		}
	}
	switch p.Egress {
	case "", EgressNone:
		p.Egress = EgressNone
	case EgressProxy:
	default:
		errs = append(errs, fmt.Errorf("sandbox: profile: egress %q must be none or proxy", p.Egress))
	}
	if p.Memory == 0 {
		p.Memory = DefaultMemory
	}
	if p.Pids == 0 {
		p.Pids = DefaultPids
	}
	if p.Memory < 16<<20 || p.Pids < 1 {
		errs = append(errs, errors.New("sandbox: profile: memory must be at least 16 MiB and pids at least 1"))
	}
	for _, e := range p.Env {
		if !strings.Contains(e, "=") {
			errs = append(errs, fmt.Errorf("sandbox: profile: env %q is not NAME=VALUE", e))
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
