package client

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// pools is an http.RoundTripper that gives each SVID of a (rotating) Source
// its own connection pool: a generation. A connection presents the
// certificate it was made with for as long as it lives, and over HTTP/2 a
// connection busy with a long stream (an event stream, an MCP session) is
// never idle, so closing idle connections at a rotation is not enough:
// requests would go on being multiplexed onto the old certificate's
// connection until that certificate expires, and then be refused. With a
// pool per SVID, every request after a rotation travels on a connection
// that presents the current SVID, while streams opened earlier finish on
// theirs.
type pools struct {
	src       *Source
	authorize tlsconfig.Authorizer
	// configure, if set, adjusts each generation's transport.
	configure func(*http.Transport)
	// logger, if set, hears of switches to a rotated SVID.
	logger *slog.Logger
	what   string // what the connections reach, for the log

	mu  sync.Mutex
	gen *generation
}

// generation is one SVID and the connections that present it.
type generation struct {
	leaf *x509.Certificate
	x5t  string
	tr   *http.Transport
}

// current returns the generation of the source's current SVID, starting
// one (and closing the previous one's idle connections) if it changed.
func (p *pools) current() *generation {
	svid, _ := p.src.GetX509SVID()
	leaf := svid.Certificates[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != nil && p.gen.leaf.Equal(leaf) {
		return p.gen
	}
	bundle, _ := p.src.GetX509BundleForTrustDomain(p.src.ID().TrustDomain())
	fixed := NewSource(svid, bundle)
	cfg := tlsconfig.MTLSClientConfig(fixed, fixed, p.authorize)
	cfg.MinVersion = tls.VersionTLS13
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	if p.configure != nil {
		p.configure(tr)
	}
	old := p.gen
	p.gen = &generation{leaf: leaf, x5t: thumbprint(leaf), tr: tr}
	if old != nil {
		old.tr.CloseIdleConnections()
		if p.logger != nil {
			p.logger.Info("new "+p.what+" connections use the rotated SVID", "spiffe_id", svid.ID, "serial", leaf.SerialNumber.Text(16))
		}
	}
	return p.gen
}

// RoundTrip sends req on a connection presenting the current SVID.
func (p *pools) RoundTrip(req *http.Request) (*http.Response, error) {
	return p.current().tr.RoundTrip(req)
}

// CloseIdleConnections closes the current generation's idle connections.
func (p *pools) CloseIdleConnections() { p.current().tr.CloseIdleConnections() }
