package store

import (
	"os"
	"syscall"
)

// datasync makes f's data durable: fdatasync, which skips the inode's
// timestamps (an overwrite of preallocated space changes nothing else).
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
