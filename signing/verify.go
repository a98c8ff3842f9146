package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"pec/certvalidation"
	"pec/internal/cms"
	"pec/tsa"
)

// ChainValidator validates a signer's certification path. [X509Validator]
// checks it with crypto/x509 against configured trust anchors; cmd/pec
// plugs package certvalidation in (revocation included) through the same
// interface.
type ChainValidator interface {
	// ValidateChain validates cert's path to a trust anchor at time at,
	// intermediates being untrusted candidates. A path that does not hold
	// is a ChainResult with its Status and a nil error; err reports only
	// the validator's own failure (a revocation source unreachable), after
	// which the outcome is unknown. It is safe for concurrent use.
	ValidateChain(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, at time.Time) (ChainResult, error)
}

// ChainStatus is the outcome of a path validation.
type ChainStatus int

// The outcomes a verifier distinguishes (ETSI EN 319 102-1 section 5.2.6).
const (
	ChainValid       ChainStatus = iota
	ChainNotFound                // no path to a trust anchor
	ChainExpired                 // a certificate of the path had expired at the time
	ChainNotYetValid             // a certificate of the path was not valid yet
	ChainRevoked                 // the certificate is revoked since RevokedAt
	ChainInvalid                 // any other reason: constraints, a bad signature
)

// ChainResult is a path validation.
type ChainResult struct {
	Status    ChainStatus
	Path      []*x509.Certificate // leaf first, trust anchor last, when found
	RevokedAt time.Time           // with ChainRevoked
	Detail    string              // why, for the report

	// Validation is certvalidation's report of the decision, when it made
	// it: the path, every check and the CRLs and OCSP responses it rested
	// on, so that a signature report (and a proof) carries its revocation
	// evidence. Nil from X509Validator.
	Validation *certvalidation.Report
}

// X509Validator validates paths with crypto/x509 against Roots, without
// revocation checking.
type X509Validator struct {
	Roots *x509.CertPool
}

var _ ChainValidator = X509Validator{}

// ValidateChain implements ChainValidator. Any extended key usage is
// accepted: document signing certificates carry emailProtection, RFC 9336
// documentSigning, or none.
func (v X509Validator) ValidateChain(_ context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, at time.Time) (ChainResult, error) {
	if v.Roots == nil {
		return ChainResult{Status: ChainNotFound, Detail: "no trust anchors are configured"}, nil
	}
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.Roots,
		Intermediates: pool,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil {
		return ChainResult{Status: ChainValid, Path: chains[0]}, nil
	}
	res := ChainResult{Status: ChainInvalid, Detail: err.Error()}
	if inv, ok := errors.AsType[x509.CertificateInvalidError](err); ok && inv.Reason == x509.Expired {
		res.Status = ChainExpired
		if inv.Cert != nil && at.Before(inv.Cert.NotBefore) {
			res.Status = ChainNotYetValid
		}
	} else if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		res.Status = ChainNotFound
	}
	return res, nil
}

// Verifier checks CMS and PDF signatures and reports in the spirit of ETSI
// EN 319 102-1. It is safe for concurrent use.
type Verifier struct {
	Chain ChainValidator // required
	// TSARoots are the trust anchors of signature timestamps; nil: the
	// signature timestamps are reported but never trusted as proof of
	// existence.
	TSARoots *x509.CertPool
	Now      func() time.Time // the validation time; nil: time.Now
}

// VerifyOptions give what a verification needs besides the signature.
type VerifyOptions struct {
	// Data is the signed content of a detached CMS signature. For an
	// attached one, when given, it must be the content the signature holds.
	Data []byte
	// Digest and Hash replace Data when only the document's digest is at
	// hand (hash-only verification of a detached signature).
	Digest []byte
	Hash   crypto.Hash
	// Certificates are untrusted certificates among which the signer's is
	// looked for when the signature does not carry it (RFC 5652 leaves the
	// certificates field optional: the RFC 9216 samples without
	// certificates need them), and which may complete its path as
	// intermediates. `pec verify --certs` fills it.
	Certificates []*x509.Certificate
}

// ErrDataRequired: a detached CMS signature is verified without the data
// (or digest) it signs.
var ErrDataRequired = errors.New("signing: a detached signature needs the signed data")

// Verify checks signed, a CMS SignedData (DER, BER or PEM) or a PDF, and
// reports. A malformed input is a report (TOTAL-FAILED/FORMAT_FAILURE),
// not an error; the error says only that the call cannot be answered: a
// detached signature without its data (ErrDataRequired), data given for a
// PDF (a *RequestError).
func (v *Verifier) Verify(ctx context.Context, signed []byte, opts VerifyOptions) (*Report, error) {
	if v.Chain == nil {
		return nil, errors.New("signing: Verifier.Chain is required")
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	r := &Report{Document: "CMS", ValidationTime: now().UTC()}
	if isPDF(signed) {
		r.Document = "PDF"
		if opts.Data != nil || opts.Digest != nil {
			return nil, badRequest("a PDF holds its signed data: give no separate data")
		}
		v.verifyPDF(ctx, signed, r, opts)
		r.summarize()
		return r, nil
	}
	sd, err := parseCMS(signed)
	if err != nil {
		r.Indication, r.SubIndication, r.Detail = TotalFailed, FormatFailure, err.Error()
		return r, nil
	}
	var content contentDigester
	switch {
	case sd.attached:
		content = dataDigester(sd.Content)
		if opts.Data != nil && !bytes.Equal(opts.Data, sd.Content) {
			r.Indication, r.SubIndication, r.Detail = TotalFailed, HashFailure, "the given data is not the content the signature holds"
		}
	case opts.Data != nil:
		content = dataDigester(opts.Data)
	case opts.Digest != nil:
		content = digestDigester{h: opts.Hash, sum: opts.Digest}
	default:
		return nil, ErrDataRequired
	}
	for _, si := range sd.signers {
		sr := v.verifySigner(ctx, sd, si, content, opts, "CAdES", r.ValidationTime)
		sr.Detached = !sd.attached
		r.Signatures = append(r.Signatures, sr)
	}
	r.summarize()
	return r, nil
}

// contentDigester hashes the signed content with the algorithm a
// SignerInfo names.
type contentDigester interface {
	digest(h crypto.Hash) ([]byte, error)
}

// dataDigester is content at hand: the only kind that a signature over the
// content itself (Ed25519 without signed attributes) can be checked with.
type dataDigester []byte

func (d dataDigester) digest(h crypto.Hash) ([]byte, error) { return digestOf(h, d), nil }

type digestDigester struct {
	h   crypto.Hash
	sum []byte
}

func (d digestDigester) digest(h crypto.Hash) ([]byte, error) {
	if h != d.h {
		return nil, fmt.Errorf("the signature hashes with %s, the digest given is %s", hashName(h, nil), hashName(d.h, nil))
	}
	return d.sum, nil
}

// digestOf hashes data with h (cms.Digest: the SHA-2 states stay on the
// stack).
func digestOf(h crypto.Hash, data []byte) []byte { return cms.Digest(h, data) }

// Check names, stable for scripts.
const (
	checkFormat        = "format"
	checkSigningCert   = "signing certificate identification"
	checkMessage       = "message digest"
	checkSignature     = "signature value"
	checkTimestamp     = "signature timestamp"
	checkChain         = "certificate chain"
	checkKeyUsage      = "key usage"
	checkSigningTime   = "signing time"
	checkByteRange     = "byte range"
	checkWholeDocument = "whole document signed"
)

// verifySigner validates one SignerInfo: the building blocks of ETSI EN 319
// 102-1 section 5.2 in order — format, identification of the signing
// certificate, cryptographic verification, signature timestamp (proof of
// existence), and X.509 validation at the validation time, or at the
// proven time when the certificate has expired since.
func (v *Verifier) verifySigner(ctx context.Context, sd *signedData, si *cms.SignerInfo, content contentDigester, opts VerifyOptions, family string, now time.Time) (r SignatureReport) {
	r.Checks = []Check{}
	defer func() {
		if r.Indication == "" {
			r.Indication = TotalPassed
		}
	}()

	// Format: algorithms, and the signed attributes CMS requires.
	h, err := si.Hash()
	r.DigestAlgorithm = hashName(h, si.DigestAlgorithm)
	r.SignatureAlgorithm = cms.SignatureAlgorithmName(si.SignatureAlgorithm)
	if err != nil {
		r.check(checkFormat, CheckFailed, err.Error())
		r.fail(Indeterminate, CryptoConstraintsFailure, err.Error())
		return r
	}
	claimedDigest, err := si.MessageDigest(sd.EContentType)
	if err == nil {
		r.SigningTime, _, err = si.SigningTime() // absent: zero
	}
	if err != nil {
		r.check(checkFormat, CheckFailed, err.Error())
		r.fail(TotalFailed, FormatFailure, err.Error())
		return r
	}
	r.check(checkFormat, CheckPassed, fmt.Sprintf("CMS SignedData, %s, %s", r.DigestAlgorithm, r.SignatureAlgorithm))

	// Identification of the signing certificate (section 5.2.3): the sid,
	// and the ESS signing-certificate attribute when present.
	cert, err := sd.Signer(si, opts.Certificates)
	var essPresent bool
	if err == nil {
		essPresent, err = si.CheckSigningCertificate(cert)
	}
	if err != nil {
		r.check(checkSigningCert, CheckFailed, err.Error())
		if errors.Is(err, cms.ErrUnsupported) {
			r.fail(Indeterminate, CryptoConstraintsFailure, err.Error())
		} else {
			r.fail(Indeterminate, NoSigningCertificateFound, err.Error())
		}
		return r
	}
	r.Signer = certificateOf(cert)
	r.Format = "CMS"
	if essPresent {
		r.Format = family + "-B-B"
		r.check(checkSigningCert, CheckPassed, "named by the sid and the signing-certificate attribute")
	} else {
		r.check(checkSigningCert, CheckWarning, "named by the sid only: no signing-certificate attribute (not a CAdES baseline signature)")
	}

	// Cryptographic verification (section 5.2.7): the data, then the
	// signature value.
	digest, err := content.digest(h)
	if err != nil {
		r.check(checkMessage, CheckFailed, err.Error())
		r.fail(Indeterminate, SignedDataNotFound, err.Error())
		return r
	}
	if si.RawSignedAttrs != nil {
		if !bytes.Equal(claimedDigest, digest) {
			r.check(checkMessage, CheckFailed, "the signed data was changed: its digest is not the message-digest attribute")
			r.fail(TotalFailed, HashFailure, "the signed data was changed after signing")
			return r
		}
		r.check(checkMessage, CheckPassed, "the data matches the message-digest attribute")
		err = si.VerifySignature(cert, h, nil)
	} else if data, ok := content.(dataDigester); ok {
		err = si.VerifySignature(cert, h, data)
	} else {
		err = si.VerifySignatureDigest(cert, h, digest)
	}
	if err != nil {
		r.check(checkSignature, CheckFailed, err.Error())
		switch {
		case errors.Is(err, cms.ErrUnsupported):
			r.fail(Indeterminate, CryptoConstraintsFailure, err.Error())
		case errors.Is(err, cms.ErrContentRequired):
			r.fail(Indeterminate, SignedDataNotFound, err.Error()+": give the data, not its digest")
		case si.RawSignedAttrs == nil:
			// Without attributes the signature covers the data (or its
			// digest) itself: a changed document and a bad signature look
			// alike.
			r.fail(TotalFailed, HashFailure, "the signed data was changed, or the signature is not the signer's")
		default:
			r.fail(TotalFailed, SigCryptoFailure, err.Error())
		}
		return r
	}
	r.check(checkSignature, CheckPassed, "verified with the signer certificate's key")

	// Signature timestamp: the proof that the signature existed at its
	// genTime (section 5.4, B-T).
	poe := v.checkTimestamps(sd, si, &r)
	if poe != nil && essPresent {
		r.Format = family + "-B-T"
	}

	// X.509 validation (section 5.2.6) at the validation time; if the
	// certificate has expired or been revoked since, at the proven time.
	if cert.KeyUsage != 0 && cert.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		r.check(checkKeyUsage, CheckFailed, "the key usage allows neither digitalSignature nor nonRepudiation")
		r.fail(Indeterminate, ChainConstraintsFailure, "the signer certificate may not sign documents")
		return r
	}
	inter := slices.Concat(sd.Certificates, opts.Certificates)
	res, err := v.Chain.ValidateChain(ctx, cert, inter, now)
	if err != nil {
		r.check(checkChain, CheckFailed, "validation could not complete: "+err.Error())
		r.fail(Indeterminate, TryLater, "the certificate's status could not be obtained")
		return r
	}
	v.judgeChain(ctx, cert, inter, res, now, poe, &r)
	if !r.SigningTime.IsZero() {
		switch {
		case r.SigningTime.Before(cert.NotBefore) || r.SigningTime.After(cert.NotAfter):
			r.check(checkSigningTime, CheckWarning, "the claimed signing time is outside the certificate's validity")
		case poe != nil && r.SigningTime.After(poe.Add(5*time.Minute)):
			r.check(checkSigningTime, CheckWarning, "the claimed signing time is after the signature timestamp")
		default:
			r.check(checkSigningTime, CheckPassed, "within the certificate's validity")
		}
	}
	return r
}

// judgeChain turns a path validation into the report.
func (v *Verifier) judgeChain(ctx context.Context, cert *x509.Certificate, inter []*x509.Certificate, res ChainResult, now time.Time, poe *time.Time, r *SignatureReport) {
	r.ChainValidation = res.Validation
	switch res.Status {
	case ChainValid:
		r.check(checkChain, CheckPassed, "valid at "+now.UTC().Format(time.RFC3339)+pathText(res.Path))
	case ChainExpired:
		// Past signature validation (section 5.6.2.4): valid at a time
		// the signature provably existed.
		if poe != nil && !poe.After(cert.NotAfter) {
			past, err := v.Chain.ValidateChain(ctx, cert, inter, *poe)
			if err == nil && past.Status == ChainValid {
				if past.Validation != nil {
					r.ChainValidation = past.Validation
				}
				r.check(checkChain, CheckPassed, "expired since, valid at the signature timestamp's time "+poe.UTC().Format(time.RFC3339)+pathText(past.Path))
				return
			}
		}
		detail := "the certificate expired on " + cert.NotAfter.UTC().Format(time.RFC3339) + " and nothing proves the signature existed before"
		if poe != nil {
			detail = "the certificate expired on " + cert.NotAfter.UTC().Format(time.RFC3339) + ", before the signature timestamp " + poe.UTC().Format(time.RFC3339)
		}
		r.check(checkChain, CheckFailed, detail)
		r.fail(Indeterminate, OutOfBoundsNoPOE, detail)
	case ChainNotYetValid:
		r.check(checkChain, CheckFailed, res.Detail)
		r.fail(Indeterminate, NotYetValid, "the certificate is not valid yet")
	case ChainNotFound:
		r.check(checkChain, CheckFailed, res.Detail)
		r.fail(Indeterminate, NoCertificateChainFound, "the signer certificate does not chain to a trust anchor")
	case ChainRevoked:
		at := res.RevokedAt.UTC().Format(time.RFC3339)
		switch {
		case poe != nil && poe.Before(res.RevokedAt):
			r.check(checkChain, CheckPassed, "revoked on "+at+", after the signature timestamp "+poe.UTC().Format(time.RFC3339))
		case poe != nil || (!r.SigningTime.IsZero() && !r.SigningTime.Before(res.RevokedAt)):
			r.check(checkChain, CheckFailed, "revoked on "+at+", before the signature was made")
			r.fail(TotalFailed, Revoked, "the signer certificate was revoked on "+at)
		default:
			r.check(checkChain, CheckFailed, "revoked on "+at+" and nothing proves the signature existed before")
			r.fail(Indeterminate, RevokedNoPOE, "the signer certificate was revoked on "+at)
		}
	default:
		r.check(checkChain, CheckFailed, res.Detail)
		r.fail(Indeterminate, CertificateChainGeneralFailure, "the certificate path is invalid: "+res.Detail)
	}
}

func pathText(path []*x509.Certificate) string {
	if len(path) == 0 {
		return ""
	}
	return ", anchored at " + path[len(path)-1].Subject.String()
}

// checkTimestamps verifies the signature timestamps of si and returns the
// earliest valid genTime, or nil.
func (v *Verifier) checkTimestamps(sd *signedData, si *cms.SignerInfo, r *SignatureReport) *time.Time {
	var poe *time.Time
	for _, a := range si.UnsignedAttrs {
		if !a.OID.Equal(oidAttrSignatureTimeStamp) {
			continue
		}
		for _, token := range a.Values {
			ts := &Timestamp{}
			tokHash, err := tsa.TokenHash(token)
			if err == nil && v.TSARoots == nil {
				err = errors.New("no trust anchors for timestamps")
			}
			var tok *tsa.Token
			if err == nil {
				tok, err = tsa.Verify(token, digestOf(tokHash, si.Signature), tokHash, tsa.VerifyOptions{Roots: v.TSARoots, Certificates: sd.Certificates})
			} else if parsed, perr := tsa.ParseToken(token); perr == nil {
				tok = parsed
			}
			if tok != nil {
				ts.Time, ts.Serial = tok.GenTime.UTC(), tok.Serial.Text(16)
				if tok.SignerCert != nil {
					ts.TSA = tok.SignerCert.Subject.String()
				}
			}
			if err != nil {
				ts.Detail = err.Error()
				r.check(checkTimestamp, CheckWarning, "not used as proof of existence: "+err.Error())
			} else {
				ts.Valid = true
				r.check(checkTimestamp, CheckPassed, "the signature existed at "+ts.Time.Format(time.RFC3339Nano)+" (TSA "+ts.TSA+")")
				if poe == nil || ts.Time.Before(*poe) {
					t := ts.Time
					poe = &t
				}
			}
			if r.Timestamp == nil || (ts.Valid && !r.Timestamp.Valid) {
				r.Timestamp = ts
			}
		}
	}
	return poe
}

func hashName(h crypto.Hash, oid asn1.ObjectIdentifier) string {
	switch h {
	case crypto.SHA256:
		return "SHA-256"
	case crypto.SHA384:
		return "SHA-384"
	case crypto.SHA512:
		return "SHA-512"
	case crypto.SHA1:
		return "SHA-1"
	case crypto.MD5:
		return "MD5"
	}
	return oid.String()
}
