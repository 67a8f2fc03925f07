package api

// TPM attested enrollment (and renewal) is two requests: the agent shows
// its TPM's endorsement key and a fresh attestation key, and gets a
// challenge only that TPM can answer; it answers with the activated
// credential, a quote over the challenge's nonce, and a new key the TPM
// created and certified with the attestation key over the same nonce.

// TPMAttestationKey is an attestation key's public area and its creation
// proof, as the TPM encoded them (TPMT_PUBLIC, TPMS_CREATION_DATA,
// TPMS_ATTEST, TPMT_SIGNATURE).
type TPMAttestationKey struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"create_data"`
	CreateAttestation []byte `json:"create_attestation"`
	CreateSignature   []byte `json:"create_signature"`
}

// TPMBeginRequest starts an attested enrollment. Token is the join token
// for a first enrollment; renewal is over mTLS and leaves it empty.
type TPMBeginRequest struct {
	Token string `json:"token,omitempty"`
	// EKPublic is the endorsement key, PKIX DER.
	EKPublic []byte `json:"ek_public"`
	// EKCertificate is the TPM maker's certificate for it, DER, if any.
	EKCertificate []byte            `json:"ek_certificate,omitempty"`
	AK            TPMAttestationKey `json:"ak"`
}

// TPMChallenge is the control plane's answer to TPMBeginRequest.
type TPMChallenge struct {
	// Session is opaque to the agent: sealed state it returns with its
	// answer, so any replica can check it.
	Session string `json:"session"`
	// Credential and Secret are TPM2_ActivateCredential's inputs.
	Credential []byte `json:"credential"`
	Secret     []byte `json:"secret"`
	// Nonce must appear in the quote and in the new key's certification.
	Nonce []byte `json:"nonce"`
	// PCRs lists the SHA-256 PCRs the control plane checks, if any.
	PCRs []int `json:"pcrs,omitempty"`
}

// TPMPCR is one PCR's value.
type TPMPCR struct {
	Index  int    `json:"index"`
	Digest []byte `json:"digest"`
}

// TPMFinishRequest answers a TPMChallenge.
type TPMFinishRequest struct {
	Token   string `json:"token,omitempty"`
	Session string `json:"session"`
	// Activated is the secret the TPM recovered from the credential.
	Activated []byte `json:"activated"`
	// Quote and QuoteSignature are TPMS_ATTEST and TPMT_SIGNATURE by the
	// attestation key over the nonce and the PCRs.
	Quote          []byte   `json:"quote"`
	QuoteSignature []byte   `json:"quote_signature"`
	PCRs           []TPMPCR `json:"pcrs"`
	// Key is the SVID key's public area and its certification by the
	// attestation key (create_data is unused).
	Key TPMAttestationKey `json:"key"`
	// CSR is signed by that key, PEM.
	CSR string `json:"csr"`
}

// SetTPMRequest sets the TPM an agent's key must live in: "sha256:HEX" of
// its endorsement key (PKIX DER), "ek-ca" for the first TPM whose EK
// certificate chains to a trusted maker, or "" for none.
type SetTPMRequest struct {
	EK string `json:"ek"`
}
