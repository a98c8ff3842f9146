package proof

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"

	"pec/certvalidation"
	"pec/tsa"
)

// The revocation data of a bundle: at export, the CRLs and OCSP responses
// that package certvalidation used to validate the log key's certificate
// and the TSA's certificate; at verification, the same validations again,
// offline, on that data alone.

// revocationSubject is one certificate a bundle's revocation data is for.
type revocationSubject struct {
	what    string // "log key's certificate", "TSA certificate"
	cert    *x509.Certificate
	purpose certvalidation.Purpose
}

// gatherRevocation validates the log key's and the TSA's certificates at
// the time of token (against opts.Roots, else the self-signed
// certificates at hand, else the validator's anchors, else the top of
// each chain) and returns the CRLs and OCSP responses the
// validations used (usable ones only, each once, in the order consulted).
// A certificate found invalid (revoked, say) still gives its data: the
// verifier will say so.
func gatherRevocation(ctx context.Context, opts ExportOptions, token []byte) ([]RevocationData, error) {
	tok, err := tsa.ParseToken(token)
	if err != nil {
		return nil, fmt.Errorf("the tree head's time-stamp token: %w", err)
	}
	signer := tok.SignerCert
	if signer == nil && len(opts.TSAChain) > 0 {
		signer = opts.TSAChain[0]
	}
	type subject struct {
		revocationSubject
		top *x509.Certificate // the last certificate of its chain
	}
	subjects := []subject{{revocationSubject{"log key's certificate", opts.LogChain[0], certvalidation.PurposeAny}, opts.LogChain[len(opts.LogChain)-1]}}
	if signer != nil {
		top := signer
		if tsaChain := slices.Concat(opts.TSAChain, tok.Certificates); len(tsaChain) > 0 {
			top = tsaChain[len(tsaChain)-1]
		}
		subjects = append(subjects, subject{revocationSubject{"TSA certificate", signer, certvalidation.PurposeTimeStamping}, top})
	}
	all := slices.Concat(opts.LogChain, opts.TSAChain, tok.Certificates)
	roots := opts.Roots
	if len(roots) == 0 {
		for _, c := range all {
			if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil && !slices.ContainsFunc(roots, c.Equal) {
				roots = append(roots, c)
			}
		}
	}
	var out []RevocationData
	seen := map[[32]byte]bool{}
	for _, s := range subjects {
		vopts := certvalidation.Options{
			Purpose:       s.purpose,
			At:            tok.GenTime,
			Intermediates: all,
			Roots:         roots,
			Revocation:    certvalidation.RevocationPrefer,
		}
		rep, err := opts.Validator.Validate(ctx, s.cert, vopts)
		if errors.Is(err, certvalidation.ErrNoTrustAnchors) {
			// No root at hand and none configured for the purpose: the top
			// of the chain given stands in (the data of the certificates
			// under it is still gathered).
			vopts.Roots = []*x509.Certificate{s.top}
			rep, err = opts.Validator.Validate(ctx, s.cert, vopts)
		}
		if rep == nil {
			return nil, fmt.Errorf("revocation data of the %s: %w", s.what, err)
		}
		for _, ev := range rep.RevocationData {
			if ev.Status == "unusable" || len(ev.Raw) == 0 {
				continue
			}
			sum := sha256.Sum256(ev.Raw)
			if seen[sum] {
				continue
			}
			seen[sum] = true
			kind := RevocationCRL
			if ev.Type == "ocsp" {
				kind = RevocationOCSP
			}
			out = append(out, RevocationData{Kind: kind, Data: ev.Raw})
		}
	}
	if len(out) > maxBundleRevocation {
		return nil, fmt.Errorf("%d CRLs and OCSP responses, over the %d a bundle may carry", len(out), maxBundleRevocation)
	}
	return out, nil
}

// offlineValidator checks bundles' revocation data: no fetch, no result
// cache (certificate signature checks are still cached, by fingerprint).
var offlineValidator = sync.OnceValues(func() (*certvalidation.Validator, error) {
	return certvalidation.New(certvalidation.Config{
		Fetch: certvalidation.FetchConfig{Offline: true},
		Cache: certvalidation.CacheConfig{Results: -1},
	}, certvalidation.Material{}, certvalidation.ValidatorOptions{})
})

// namesRevocationSource reports whether c names a CRL distribution point
// or an OCSP responder: its status can then be established, and a bundle
// must establish it.
func namesRevocationSource(c *x509.Certificate) bool {
	return len(c.CRLDistributionPoints) > 0 || len(c.OCSPServer) > 0
}

// chainsNameRevocationSource reports whether a certificate of chains, the
// trust anchors aside, names a CRL distribution point or an OCSP responder.
func chainsNameRevocationSource(chains [][]*x509.Certificate) bool {
	for _, chain := range chains {
		for _, c := range chain[:max(len(chain)-1, 0)] {
			if namesRevocationSource(c) {
				return true
			}
		}
	}
	return false
}

// checkRevocation is VerifyBundle's revocation check (see there). logChains
// are the log key's certificate chains, tok the verified token.
func checkRevocation(b *Bundle, logChains [][]*x509.Certificate, tok *tsa.Token, roots, inter *x509.CertPool) error {
	fail := func(format string, args ...any) error {
		return &BundleError{Check: "revocation", Err: fmt.Errorf(format, args...)}
	}
	tsaInter := inter.Clone()
	for _, c := range tok.Certificates {
		tsaInter.AddCert(c)
	}
	var tsaChains [][]*x509.Certificate
	if tok.SignerCert != nil {
		var err error
		tsaChains, err = tok.SignerCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: tsaInter, CurrentTime: tok.GenTime, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return &BundleError{Check: "timestamp", Err: fmt.Errorf("the TSA certificate: %w", err)}
		}
	}
	if len(b.Revocation) == 0 && !chainsNameRevocationSource(logChains) && !chainsNameRevocationSource(tsaChains) {
		return nil // nothing to establish, nothing to check
	}
	var crls, responses [][]byte
	for i, r := range b.Revocation {
		file := b.Manifest.Revocation[i].File
		switch r.Kind {
		case RevocationCRL:
			if _, err := x509.ParseRevocationList(r.Data); err != nil {
				return fail("%s: not a CRL: %v", file, err)
			}
			crls = append(crls, r.Data)
		case RevocationOCSP:
			if _, err := ocsp.ParseResponse(r.Data, nil); err != nil {
				return fail("%s: not an OCSP response: %v", file, err)
			}
			responses = append(responses, r.Data)
		default:
			return fail("%s: kind %q", file, r.Kind)
		}
	}
	v, err := offlineValidator()
	if err != nil {
		return fail("%v", err)
	}
	anchorsOf := func(chains [][]*x509.Certificate) []*x509.Certificate {
		var out []*x509.Certificate
		for _, chain := range chains {
			if a := chain[len(chain)-1]; !slices.ContainsFunc(out, a.Equal) {
				out = append(out, a)
			}
		}
		return out
	}
	intermediates := slices.Concat(b.Certificates[1:], b.TSACertificates, tok.Certificates)
	type subject struct {
		revocationSubject
		roots []*x509.Certificate
	}
	subjects := []subject{{revocationSubject{"log key's certificate", b.Certificates[0], certvalidation.PurposeAny}, anchorsOf(logChains)}}
	if tok.SignerCert != nil {
		subjects = append(subjects, subject{revocationSubject{"TSA certificate", tok.SignerCert, certvalidation.PurposeTimeStamping}, anchorsOf(tsaChains)})
	}
	used := map[string]bool{}
	unusable := map[string]string{}
	for _, s := range subjects {
		rep, err := v.Validate(context.Background(), s.cert, certvalidation.Options{
			Purpose:       s.purpose,
			At:            tok.GenTime,
			Intermediates: intermediates,
			Roots:         s.roots,
			CRLs:          crls,
			OCSPResponses: responses,
			Revocation:    certvalidation.RevocationPrefer,
			Offline:       true,
		})
		if rep == nil {
			return &BundleError{Check: "certificates", Err: fmt.Errorf("the %s: %w", s.what, err)}
		}
		if err != nil {
			if e, ok := errors.AsType[*certvalidation.Error](err); ok && e.Reason == certvalidation.ReasonRevoked {
				return fail("the %s's chain at %s: %w", s.what, tok.GenTime.UTC().Format(time.RFC3339), err)
			}
			return &BundleError{Check: "certificates", Err: fmt.Errorf("the %s: %w", s.what, err)}
		}
		for _, c := range rep.Checks {
			if c.Name == "revocation" && c.Status != certvalidation.StatusOK && c.Cert < len(rep.Path) && rep.Path[c.Cert] != nil && namesRevocationSource(rep.Path[c.Cert]) {
				return fail("the %s's chain: the status of %q, which names a CRL distribution point or an OCSP responder, is not established by the bundle's revocation data: %s", s.what, rep.Path[c.Cert].Subject.String(), c.Detail)
			}
		}
		for _, ev := range rep.RevocationData {
			if ev.Status == "unusable" {
				if _, ok := unusable[ev.SHA256]; !ok {
					unusable[ev.SHA256] = ev.Reason
				}
				continue
			}
			used[ev.SHA256] = true
		}
	}
	for i, r := range b.Revocation {
		sum := sha256.Sum256(r.Data)
		h := hex.EncodeToString(sum[:])
		if used[h] {
			continue
		}
		why, ok := unusable[h]
		if !ok {
			why = "it concerns no certificate of either chain"
		}
		return fail("%s (%s): unusable: %s", b.Manifest.Revocation[i].File, r.Kind, why)
	}
	return nil
}
