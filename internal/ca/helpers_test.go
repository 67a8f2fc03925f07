package ca_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
)

type pkixExt = pkix.Extension

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

// basicConstraintsCA is a CSR extension asking for CA:true.
func basicConstraintsCA() pkix.Extension {
	v, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v}
}
