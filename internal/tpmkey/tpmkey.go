// Package tpmkey keeps an agent's SVID key inside a TPM 2.0 and proves it
// to the control plane: the agent side of attested enrollment. The key is
// created by the TPM, never leaves it (fixedTPM, fixedParent), and is
// certified by a fresh attestation key that credential activation ties to
// the TPM's endorsement key. What is kept on disk is the TPM's wrapped key
// blob, which only the same TPM can load.
package tpmkey

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/google/go-attestation/attest"

	"github.com/bulkhead-dev/bulkhead/api"
)

// DefaultDevice is the kernel's TPM resource manager.
const DefaultDevice = "/dev/tpmrm0"

// TPM is an open TPM.
type TPM struct {
	t *attest.TPM
}

// channel is a TPM command channel over a device or a socket; the
// measurement log is not read from it.
type channel struct {
	rw interface {
		Read([]byte) (int, error)
		Write([]byte) (int, error)
		Close() error
	}
}

func (c channel) Read(b []byte) (int, error)  { return c.rw.Read(b) }
func (c channel) Write(b []byte) (int, error) { return c.rw.Write(b) }
func (c channel) Close() error                { return c.rw.Close() }
func (c channel) MeasurementLog() ([]byte, error) {
	return nil, errors.New("tpmkey: no measurement log on this channel")
}

// Open opens the TPM at spec: a device path (/dev/tpmrm0) or unix:PATH, a
// socket speaking raw TPM commands (swtpm's server socket).
func Open(spec string) (*TPM, error) {
	if spec == "" {
		spec = DefaultDevice
	}
	var c channel
	if path, ok := strings.CutPrefix(spec, "unix:"); ok {
		conn, err := net.Dial("unix", path)
		if err != nil {
			return nil, fmt.Errorf("tpmkey: connect to TPM socket %s: %w", path, err)
		}
		c.rw = conn
	} else {
		f, err := os.OpenFile(spec, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("tpmkey: open TPM: %w", err)
		}
		c.rw = f
	}
	t, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: c})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("tpmkey: open TPM %s: %w", spec, err)
	}
	return &TPM{t: t}, nil
}

// Close closes the TPM; keys loaded from it stop working.
func (t *TPM) Close() error { return t.t.Close() }

// Prover is one attested enrollment in progress: a fresh attestation key
// and the endorsement key it is shown with.
type Prover struct {
	t  *TPM
	ak *attest.AK
	ek attest.EK
}

// Begin creates an attestation key and returns what the control plane
// needs to challenge it (the join token is the caller's to add).
func (t *TPM) Begin() (*Prover, api.TPMBeginRequest, error) {
	eks, err := t.t.EKs()
	if err != nil {
		return nil, api.TPMBeginRequest{}, fmt.Errorf("tpmkey: read endorsement key: %w", err)
	}
	if len(eks) == 0 {
		return nil, api.TPMBeginRequest{}, errors.New("tpmkey: the TPM has no endorsement key")
	}
	ek := eks[0]
	der, err := x509.MarshalPKIXPublicKey(ek.Public)
	if err != nil {
		return nil, api.TPMBeginRequest{}, fmt.Errorf("tpmkey: endorsement key: %w", err)
	}
	ak, err := t.t.NewAK(&attest.AKConfig{Algorithm: attest.ECDSA})
	if err != nil {
		return nil, api.TPMBeginRequest{}, fmt.Errorf("tpmkey: create attestation key: %w", err)
	}
	p := ak.AttestationParameters()
	req := api.TPMBeginRequest{EKPublic: der, AK: api.TPMAttestationKey{Public: p.Public,
		CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}}
	if ek.Certificate != nil {
		req.EKCertificate = ek.Certificate.Raw
	}
	return &Prover{t: t, ak: ak, ek: ek}, req, nil
}

// Answer answers the control plane's challenge: it activates the
// credential, quotes the PCRs over the nonce, and creates the SVID key,
// certified over the same nonce. The CSR is the caller's to make with the
// returned key's Signer.
func (p *Prover) Answer(ch api.TPMChallenge) (api.TPMFinishRequest, *Key, error) {
	secret, err := p.ak.ActivateCredentialWithEK(p.t.t, attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret}, p.ek)
	if err != nil {
		return api.TPMFinishRequest{}, nil, fmt.Errorf("tpmkey: activate credential: %w", err)
	}
	q, err := p.ak.Quote(p.t.t, ch.Nonce, attest.HashSHA256)
	if err != nil {
		return api.TPMFinishRequest{}, nil, fmt.Errorf("tpmkey: quote: %w", err)
	}
	all, err := p.t.t.PCRs(attest.HashSHA256)
	if err != nil {
		return api.TPMFinishRequest{}, nil, fmt.Errorf("tpmkey: read PCRs: %w", err)
	}
	pcrs := make([]api.TPMPCR, 0, len(all))
	for _, pcr := range all {
		pcrs = append(pcrs, api.TPMPCR{Index: pcr.Index, Digest: pcr.Digest})
	}
	k, err := p.t.t.NewKey(p.ak, &attest.KeyConfig{Algorithm: attest.ECDSA, Size: 256, QualifyingData: ch.Nonce})
	if err != nil {
		return api.TPMFinishRequest{}, nil, fmt.Errorf("tpmkey: create key: %w", err)
	}
	key, err := wrap(k)
	if err != nil {
		return api.TPMFinishRequest{}, nil, err
	}
	c := k.CertificationParameters()
	return api.TPMFinishRequest{Session: ch.Session, Activated: secret, Quote: q.Quote, QuoteSignature: q.Signature, PCRs: pcrs,
		Key: api.TPMAttestationKey{Public: c.Public, CreateAttestation: c.CreateAttestation, CreateSignature: c.CreateSignature}}, key, nil
}

// Close unloads the attestation key; it is used for one enrollment.
func (p *Prover) Close() error { return p.ak.Close(p.t.t) }

// Key is a TPM-resident signing key.
type Key struct {
	k      *attest.Key
	signer crypto.Signer
}

func wrap(k *attest.Key) (*Key, error) {
	priv, err := k.Private(k.Public())
	if err != nil {
		return nil, fmt.Errorf("tpmkey: key: %w", err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, errors.New("tpmkey: the TPM key cannot sign")
	}
	return &Key{k: k, signer: s}, nil
}

// Signer signs with the key inside the TPM.
func (k *Key) Signer() crypto.Signer { return k.signer }

// Blob is the key as the TPM wrapped it, to keep beside the certificate:
// only this TPM can load it.
func (k *Key) Blob() ([]byte, error) { return k.k.Marshal() }

// Close unloads the key.
func (k *Key) Close() error { return k.k.Close() }

// LoadKey loads a key saved with Blob.
func (t *TPM) LoadKey(blob []byte) (*Key, error) {
	k, err := t.t.LoadKey(blob)
	if err != nil {
		return nil, fmt.Errorf("tpmkey: load key: %w", err)
	}
	return wrap(k)
}
