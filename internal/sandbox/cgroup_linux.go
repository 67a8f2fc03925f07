package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// cgroupRoot is where the cgroup filesystems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroup is one sandbox's cgroup: one directory per hierarchy (cgroup v2:
// one; v1: pids and memory).
type cgroup struct{ dirs []string }

// cgroupLayout says which cgroup hierarchies bound pids and memory here:
// v2 when the unified hierarchy offers both controllers, else v1.
func cgroupLayout() (v2 bool, err error) {
	b, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
	if err == nil {
		ctl := strings.Fields(string(b))
		if contains(ctl, "pids") && contains(ctl, "memory") {
			return true, nil
		}
		return false, errors.New("cgroup v2 without the pids and memory controllers")
	}
	for _, c := range []string{"pids", "memory"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, c, "cgroup.procs")); err != nil {
			return false, fmt.Errorf("no cgroup %s controller: %w", c, err)
		}
	}
	return false, nil
}

// newCgroup makes a cgroup bounded as p says.
func newCgroup(p Profile) (*cgroup, error) {
	v2, err := cgroupLayout()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	name := "bulkhead-sandbox-" + hex.EncodeToString(id[:])
	cg := &cgroup{}
	limits := map[string]map[string]string{}
	if v2 {
		parent := filepath.Join(cgroupRoot, "bulkhead-sandbox")
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		// Controllers are enabled for the children of the parent.
		if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+pids +memory"), 0o644); err != nil {
			return nil, fmt.Errorf("cgroup: enable controllers: %w", err)
		}
		dir := filepath.Join(parent, name)
		limits[dir] = map[string]string{"pids.max": strconv.FormatInt(p.Pids, 10), "memory.max": strconv.FormatInt(p.Memory, 10), "memory.swap.max": "0"}
		cg.dirs = append(cg.dirs, dir)
	} else {
		pids := filepath.Join(cgroupRoot, "pids", "bulkhead-sandbox", name)
		mem := filepath.Join(cgroupRoot, "memory", "bulkhead-sandbox", name)
		limits[pids] = map[string]string{"pids.max": strconv.FormatInt(p.Pids, 10)}
		limits[mem] = map[string]string{"memory.limit_in_bytes": strconv.FormatInt(p.Memory, 10)}
		cg.dirs = append(cg.dirs, pids, mem)
	}
	for _, dir := range cg.dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			cg.remove()
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		for file, v := range limits[dir] {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil && !(file == "memory.swap.max" && errors.Is(err, os.ErrNotExist)) {
				cg.remove()
				return nil, fmt.Errorf("cgroup: %s: %w", file, err)
			}
		}
	}
	return cg, nil
}

// add moves pid into the cgroup.
func (cg *cgroup) add(pid int) error {
	for _, dir := range cg.dirs {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("cgroup: join: %w", err)
		}
	}
	return nil
}

// kill ends every process left in the cgroup.
func (cg *cgroup) kill() {
	for _, dir := range cg.dirs {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// remove deletes the cgroup's directories (they must be empty of
// processes).
func (cg *cgroup) remove() {
	for _, dir := range cg.dirs {
		_ = os.Remove(dir)
	}
}
