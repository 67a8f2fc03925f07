package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

// ownCred is a credential the control plane issues to itself and keeps
// fresh in a directory: its serving certificate, and the bootstrap operator
// credential that the CLI on the same machine uses.
type ownCred struct {
	dir    string
	id     spiffeid.ID
	ttl    time.Duration
	dns    []string
	ips    []net.IP
	action string

	ids    *identity.Service
	root   *x509.Certificate
	clock  clock.Clock
	logger *slog.Logger
	tls    atomic.Pointer[tls.Certificate]
}

// ensure reuses the credential in dir if it is still good, or issues a new
// one (with a new key) if it is missing, for another identity or root, short
// of its SANs, revoked, or past half of its life.
func (c *ownCred) ensure(ctx context.Context) error {
	if cred, ok := c.reusable(ctx); ok {
		pair, err := tls.LoadX509KeyPair(c.dir+"/"+svidfile.CertFile, c.dir+"/"+svidfile.KeyFile)
		if err == nil {
			c.tls.Store(&pair)
			c.logger.Debug("reusing credential", "dir", c.dir, "spiffe_id", c.id, "expires", cred.Leaf().NotAfter)
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("server: generate key: %w", err)
	}
	issued, err := c.ids.IssueDirect(ctx, audit.Actor{Kind: audit.ActorSystem, ID: "bulkhead-serve"}, c.action, c.id, key.Public(), c.ttl, c.dns, c.ips)
	if err != nil {
		return fmt.Errorf("server: issue %s: %w", c.id, err)
	}
	if err := svidfile.Write(c.dir, issued.ChainPEM(), key, c.ids.BundlePEM()); err != nil {
		return err
	}
	pair := tls.Certificate{PrivateKey: key, Leaf: issued.Leaf}
	for _, cert := range issued.Chain {
		pair.Certificate = append(pair.Certificate, cert.Raw)
	}
	c.tls.Store(&pair)
	c.logger.Info("issued credential", "dir", c.dir, "spiffe_id", c.id, "expires", issued.Leaf.NotAfter.Format(time.RFC3339))
	return nil
}

func (c *ownCred) reusable(ctx context.Context) (*svidfile.Credential, bool) {
	if !svidfile.Exists(c.dir) {
		return nil, false
	}
	cred, err := svidfile.Load(c.dir)
	if err != nil {
		c.logger.Warn("replacing unreadable credential", "dir", c.dir, "err", err)
		return nil, false
	}
	leaf := cred.Leaf()
	now := c.clock.Now()
	if cred.SVID.ID != c.id || now.After(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2)) {
		return nil, false
	}
	roots := cred.Bundle.X509Authorities()
	if len(roots) == 0 || !roots[0].Equal(c.root) || len(cred.SVID.Certificates) < 2 || leaf.CheckSignatureFrom(cred.SVID.Certificates[1]) != nil {
		return nil, false
	}
	for _, d := range c.dns {
		if !slices.Contains(leaf.DNSNames, d) {
			return nil, false
		}
	}
	for _, ip := range c.ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return nil, false
		}
	}
	// A credential the store no longer vouches for (revoked, or from a
	// wiped database) is replaced.
	if _, err := c.ids.Authenticate(ctx, leaf); err != nil {
		return nil, false
	}
	return cred, true
}

// refresh keeps the credential fresh until ctx ends.
func (c *ownCred) refresh(ctx context.Context) error {
	for {
		leaf := c.tls.Load().Leaf
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if soonest := c.clock.Now().Add(time.Second); half.Before(soonest) {
			half = soonest
		}
		// An absolute deadline: time that moves past it while this loop
		// gets here (a clock jump, a test's fake clock) still wakes it.
		select {
		case <-ctx.Done():
			return nil
		case <-clock.At(c.clock, half):
		}
		if err := c.ensure(ctx); err != nil {
			// Keep serving the current certificate and retry; it is
			// still valid for the second half of its life.
			c.logger.Error("credential renewal failed; will retry", "spiffe_id", c.id, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-c.clock.After(time.Minute):
			}
		}
	}
}

// getCertificate serves the current certificate (tls.Config.GetCertificate).
func (c *ownCred) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.tls.Load(), nil
}
