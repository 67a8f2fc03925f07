package sandbox

// WideRootForTest binds the host's whole root into c's sandbox (read-only
// where the host's is), to show the other layers holding alone.
func WideRootForTest(c *Confined) { c.spec.WideRoot = true }
