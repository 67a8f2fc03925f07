package api

import "time"

// SetSecretRequest sets a secret's value (PUT /v1/secrets/{name}). Value is
// base64 in JSON.
type SetSecretRequest struct {
	Value []byte `json:"value"`
}

// Secret describes a stored secret. It never carries the value.
type Secret struct {
	Name string `json:"name"`
	// Version counts the sets of this name; records cite it in place of
	// the value.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// SecretValue is a secret's current value, returned only to gateways (GET
// /v1/secrets/{name}/value). Value is base64 in JSON.
type SecretValue struct {
	Name    string `json:"name"`
	Version int64  `json:"version"`
	Value   []byte `json:"value"`
}

// ComponentSVIDRequest asks for the SVID of a Bulkhead component (POST
// /v1/components/{kind}/{name}/svid): the component's key stays with it.
type ComponentSVIDRequest struct {
	CSR string `json:"csr"` // PEM
	// TTL is a Go duration ("24h"); empty means the server's default.
	TTL string `json:"ttl,omitempty"`
}
