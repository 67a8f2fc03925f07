package client

// Internals the external tests check against.
var (
	TokenThumbprint = tokenCnf
	Thumbprint      = thumbprint
)
