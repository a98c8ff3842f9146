package tsa

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// RespondToken is RespondWith for a caller in the same process that wants
// the token itself (signing.LocalTSA): a granted token also comes back
// as a *Token, the one ParseToken reads from resp, made from the fields
// the authority has just encoded instead of parsing the response again
// (its TSA certificate above all: a parse of every token's certificates
// cost some 4% of a node's CPU). Its Certificates and SignerCert are the
// authority's own values, shared: not to be changed. A request refused
// has tok nil and err a *RejectError, resp the rejection; other errors
// are the authority's own failures, as with RespondWith.
func (a *Authority) RespondToken(ctx context.Context, der []byte, opts RespondOptions) (resp []byte, tok *Token, evidenceID string, err error) {
	start := time.Now()
	resp, evidenceID, fail, err := a.respond(ctx, der, opts, &tok)
	a.metrics.observe(fail, err, time.Since(start))
	if err != nil {
		return nil, nil, "", err
	}
	if tok == nil {
		// A rejection: its reason, as ParseToken gives it.
		if _, rerr := responseToken(resp); rerr != nil {
			return resp, nil, "", rerr
		}
		return resp, nil, "", errors.New("tsa: no token granted")
	}
	return resp, tok, evidenceID, nil
}

// prepareTemplate reads back, as ParseToken does, the fields that every
// token of the key carries alike.
func (k *authorityKey) prepareTemplate(extra []*x509.Certificate) error {
	s := cryptobyte.String(k.enc.accuracyOrder)
	var err error
	if s.PeekASN1Tag(cbasn1.SEQUENCE) {
		var acc cryptobyte.String
		s.ReadASN1(&acc, cbasn1.SEQUENCE)
		if k.tmpl.Accuracy, err = parseAccuracy(acc); err != nil {
			return err
		}
	}
	if s.PeekASN1Tag(cbasn1.BOOLEAN) && !s.ReadASN1Boolean(&k.tmpl.Ordering) {
		return errors.New("tsa: the ordering field does not read back")
	}
	n := cryptobyte.String(k.enc.tsaName)
	var name cryptobyte.String
	if !n.ReadASN1(&name, tagCons0) {
		return errors.New("tsa: the tsa name does not read back")
	}
	if k.tmpl.TSAName, err = generalNameText(name); err != nil {
		return err
	}
	k.tmpl.Certificates = append([]*x509.Certificate{k.cert}, extra...)
	return nil
}

// token is the Token of a response just encoded: raw the ContentInfo in
// it (copied when the caller's buffer holds it), the request's fields.
func (k *authorityKey) token(raw []byte, copyRaw bool, req *request, policy asn1.ObjectIdentifier, serial *big.Int, gen time.Time) *Token {
	if copyRaw {
		raw = bytes.Clone(raw)
	}
	t := &Token{
		GenTime:  gen,
		Accuracy: k.tmpl.Accuracy,
		Ordering: k.tmpl.Ordering,
		Serial:   new(big.Int).Set(serial),
		Policy:   slices.Clone(policy),
		Hash:     req.hash,
		Imprint:  bytes.Clone(req.hashedMessage),
		TSAName:  k.tmpl.TSAName,
		Raw:      raw,
	}
	if req.nonce != nil {
		t.Nonce = new(big.Int).SetBytes(req.nonce)
		if req.nonce[0]&0x80 != 0 { // negative, two's complement
			t.Nonce.Sub(t.Nonce, new(big.Int).Lsh(big.NewInt(1), uint(8*len(req.nonce))))
		}
	}
	if req.certReq {
		t.Certificates = slices.Clip(k.tmpl.Certificates)
		t.SignerCert = k.cert
	}
	return t
}
