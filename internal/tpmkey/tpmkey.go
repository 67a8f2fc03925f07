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
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
)

// DefaultDevice is the kernel's TPM resource manager.
const DefaultDevice = "/dev/tpmrm0"

// TPM is an open TPM.
type TPM struct {
	t    *attest.TPM
	spec string
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
		if err := flushTransient(c); err != nil {
			_ = c.Close()
			return nil, err
		}
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
	return &TPM{t: t, spec: spec}, nil
}

// flushTransient unloads the objects earlier clients left in a TPM served
// on a raw socket (swtpm): unlike the kernel's /dev/tpmrm0 it has no
// resource manager, and serves one client at a time, so what is loaded
// belongs to clients that are gone and would fill its three slots.
func flushTransient(rw channel) error {
	hs, _, err := tpm2.GetCapability(rw, tpm2.CapabilityHandles, 16, uint32(tpm2.HandleTypeTransient)<<24)
	if err != nil {
		return fmt.Errorf("tpmkey: list loaded objects: %w", err)
	}
	for _, h := range hs {
		if hd, ok := h.(tpmutil.Handle); ok {
			if err := tpm2.FlushContext(rw, hd); err != nil {
				return fmt.Errorf("tpmkey: unload a stale object: %w", err)
			}
		}
	}
	return nil
}

// Close closes the TPM; keys loaded from it stop working.
func (t *TPM) Close() error { return t.t.Close() }

// EKHash is the endorsement key's "sha256:HEX" name, which an operator
// pins for the agent.
func (t *TPM) EKHash() (string, error) {
	_, der, err := t.ek()
	if err != nil {
		return "", err
	}
	return attestation.EKHash(der), nil
}

// ek reads the endorsement key and its PKIX DER.
func (t *TPM) ek() (attest.EK, []byte, error) {
	eks, err := t.t.EKs()
	if err != nil {
		return attest.EK{}, nil, fmt.Errorf("tpmkey: read endorsement key: %w", err)
	}
	if len(eks) == 0 {
		return attest.EK{}, nil, errors.New("tpmkey: the TPM has no endorsement key")
	}
	der, err := x509.MarshalPKIXPublicKey(eks[0].Public)
	if err != nil {
		return attest.EK{}, nil, fmt.Errorf("tpmkey: endorsement key: %w", err)
	}
	return eks[0], der, nil
}

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
	ek, der, err := t.ek()
	if err != nil {
		return nil, api.TPMBeginRequest{}, err
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
	key, err := p.t.wrap(k)
	if err != nil {
		return api.TPMFinishRequest{}, nil, err
	}
	c := k.CertificationParameters()
	return api.TPMFinishRequest{Session: ch.Session, Activated: secret, Quote: q.Quote, QuoteSignature: q.Signature, PCRs: pcrs,
		Key: api.TPMAttestationKey{Public: c.Public, CreateAttestation: c.CreateAttestation, CreateSignature: c.CreateSignature}}, key, nil
}

// Close unloads the attestation key; it is used for one enrollment.
func (p *Prover) Close() error { return p.ak.Close(p.t.t) }

// Key is a TPM-resident signing key; it is a crypto.Signer. It may be
// unloaded to free the TPM's object slot, and is loaded again from its
// wrapped blob when next it signs.
type Key struct {
	t    *TPM
	pub  crypto.PublicKey
	blob []byte
	// owns says Close closes the TPM too (LoadPEM opened it).
	owns bool

	mu     sync.Mutex
	k      *attest.Key // nil while unloaded
	signer crypto.Signer
}

var _ crypto.Signer = (*Key)(nil)

func (t *TPM) wrap(k *attest.Key) (*Key, error) {
	blob, err := k.Marshal()
	if err != nil {
		return nil, fmt.Errorf("tpmkey: marshal key: %w", err)
	}
	key := &Key{t: t, pub: k.Public(), blob: blob}
	if err := key.use(k); err != nil {
		return nil, err
	}
	return key, nil
}

// use makes k the loaded object; the caller holds mu or owns key alone.
func (key *Key) use(k *attest.Key) error {
	priv, err := k.Private(k.Public())
	if err != nil {
		return fmt.Errorf("tpmkey: key: %w", err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return errors.New("tpmkey: the TPM key cannot sign")
	}
	key.k, key.signer = k, s
	return nil
}

// Public is the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign signs digest inside the TPM, loading the key first if it was
// unloaded.
func (k *Key) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.k == nil {
		loaded, err := k.t.t.LoadKey(k.blob)
		if err != nil {
			return nil, fmt.Errorf("tpmkey: load key: %w", err)
		}
		if err := k.use(loaded); err != nil {
			return nil, err
		}
	}
	return k.signer.Sign(r, digest, opts)
}

// Unload frees the key's object slot in the TPM.
func (k *Key) Unload() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.k == nil {
		return nil
	}
	err := k.k.Close()
	k.k, k.signer = nil, nil
	return err
}

// PEMType is the PEM block of a saved key.
const PEMType = "BULKHEAD TPM KEY"

// MarshalPEM is the key as the TPM wrapped it, naming the TPM: only that
// TPM can load it, so the file is useless anywhere else.
func (k *Key) MarshalPEM() ([]byte, error) {
	return pem.EncodeToMemory(&pem.Block{Type: PEMType, Headers: map[string]string{"TPM": k.t.spec}, Bytes: k.blob}), nil
}

// Close unloads the key, and closes the TPM if LoadPEM opened it.
func (k *Key) Close() error {
	err := k.Unload()
	if k.owns {
		err = errors.Join(err, k.t.Close())
	}
	return err
}

// Replace retires k in favour of next, a key of the same TPM, which then
// owns the TPM if k did.
func (k *Key) Replace(next *Key) error {
	if next.t == k.t {
		next.owns, k.owns = next.owns || k.owns, false
	}
	return k.Unload()
}

// TPM is the TPM the key is in.
func (k *Key) TPM() *TPM { return k.t }

// LoadPEM opens the TPM a saved key names and loads the key into it. The
// TPM stays open while the key is in use.
func LoadPEM(b []byte) (*Key, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != PEMType {
		return nil, fmt.Errorf("tpmkey: not a %s", PEMType)
	}
	t, err := Open(blk.Headers["TPM"])
	if err != nil {
		return nil, err
	}
	k, err := t.t.LoadKey(blk.Bytes)
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("tpmkey: load key: %w", err)
	}
	key, err := t.wrap(k)
	if err != nil {
		_ = t.Close()
		return nil, err
	}
	key.owns = true
	return key, nil
}
