package certvalidation

import (
	"bytes"
	"crypto/dsa" //nolint:staticcheck // DSA only to verify old certificates (PKITS 4.1.4-4.1.6)
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidPublicKeyDSA = asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}
	// oidPlaceholder stands in for an extension crypto/x509 refuses, while
	// the certificate is re-parsed; nothing ever sees it.
	oidPlaceholder = asn1.ObjectIdentifier{2, 25, 1}
)

// ParseCertificate parses one DER certificate. It is crypto/x509's parser,
// with a second try for three encodings that crypto/x509 refuses and RFC
// 5280 allows: a DSA key whose domain parameters are inherited from the
// issuer (section 6.1.4 (f); the key is returned as a *dsa.PublicKey with
// empty Parameters, filled in from the issuer during validation), a negative
// serial number (which section 4.1.2.2 says to tolerate), and CRL
// distribution points named by a directoryName or relative to the issuer
// (section 4.2.1.13), which this package reads itself. The returned
// certificate's Raw fields are the input's bytes in every case.
func ParseCertificate(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err == nil {
		return c, nil
	}
	if c2, err2 := reparse(der); err2 == nil {
		return c2, nil
	}
	return nil, fmt.Errorf("certvalidation: %w", err)
}

// reparse rewrites the parts of der that crypto/x509 refuses into forms it
// accepts, parses that, and puts the original values back.
func reparse(der []byte) (*x509.Certificate, error) {
	in := cryptobyte.String(der)
	var certSeq, tbsEl cryptobyte.String
	if !in.ReadASN1(&certSeq, cbasn1.SEQUENCE) || !in.Empty() || !certSeq.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed certificate")
	}
	rest := []byte(certSeq) // signatureAlgorithm, signatureValue
	tbs := tbsEl
	var tbsContent cryptobyte.String
	if !tbs.ReadASN1(&tbsContent, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed tbsCertificate")
	}
	var out cryptobyte.Builder
	var serial *big.Int
	var dsaY *big.Int
	var spkiRaw []byte
	var origExts []pkix.Extension
	var fail error
	out.AddASN1(cbasn1.SEQUENCE, func(cert *cryptobyte.Builder) {
		cert.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			var el cryptobyte.String
			var tag cbasn1.Tag
			// version [0], optional
			if tbsContent.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific().Constructed()) {
				tbsContent.ReadAnyASN1Element(&el, &tag)
				b.AddBytes(el)
			}
			// serialNumber: a negative one is replaced by 1 while parsing.
			var serialEl cryptobyte.String
			if !tbsContent.ReadASN1Element(&serialEl, cbasn1.INTEGER) {
				fail = errors.New("malformed serial number")
				return
			}
			sv := serialEl
			var content cryptobyte.String
			sv.ReadASN1(&content, cbasn1.INTEGER)
			if len(content) > 0 && content[0]&0x80 != 0 {
				serial = new(big.Int)
				s := cryptobyte.String(serialEl)
				if !s.ReadASN1Integer(serial) {
					fail = errors.New("malformed serial number")
					return
				}
				b.AddASN1Int64(1)
			} else {
				b.AddBytes(serialEl)
			}
			// signature, issuer, validity, subject
			for range 4 {
				if !tbsContent.ReadAnyASN1Element(&el, &tag) {
					fail = errors.New("malformed tbsCertificate")
					return
				}
				b.AddBytes(el)
			}
			// subjectPublicKeyInfo: DSA without parameters gets dummy ones.
			var spki cryptobyte.String
			if !tbsContent.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
				fail = errors.New("malformed subjectPublicKeyInfo")
				return
			}
			spkiRaw = spki
			y, ok := dsaWithoutParams(spki)
			if ok {
				dsaY = y
				b.AddBytes(dummyDSASPKI(spki))
			} else {
				b.AddBytes(spki)
			}
			// issuerUniqueID, subjectUniqueID, extensions
			for !tbsContent.Empty() {
				if !tbsContent.ReadAnyASN1Element(&el, &tag) {
					fail = errors.New("malformed tbsCertificate")
					return
				}
				if tag != cbasn1.Tag(3).ContextSpecific().Constructed() {
					b.AddBytes(el)
					continue
				}
				exts, err := readExtensions(el)
				if err != nil {
					fail = err
					return
				}
				origExts = exts
				b.AddASN1(tag, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, e := range exts {
							if e.Id.Equal(oidExtCRLDistPoints) {
								e.Id = oidPlaceholder
							}
							ed, err := asn1.Marshal(e)
							if err != nil {
								fail = err
								return
							}
							b.AddBytes(ed)
						}
					})
				})
			}
		})
		cert.AddBytes(rest)
	})
	if fail != nil {
		return nil, fail
	}
	patched, err := out.Bytes()
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(patched)
	if err != nil {
		return nil, err
	}
	// Put the original encoding back: signatures are checked over these bytes.
	c.Raw = slices.Clone(der)
	c.RawTBSCertificate = slices.Clone([]byte(tbsEl))
	c.RawSubjectPublicKeyInfo = slices.Clone(spkiRaw)
	if serial != nil {
		c.SerialNumber = serial
	}
	if dsaY != nil {
		c.PublicKey = &dsa.PublicKey{Y: dsaY}
	}
	if origExts != nil {
		c.Extensions = origExts
		c.CRLDistributionPoints = nil
		c.UnhandledCriticalExtensions = slices.DeleteFunc(c.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool {
			return o.Equal(oidPlaceholder)
		})
		for _, e := range origExts {
			if e.Id.Equal(oidExtCRLDistPoints) {
				if dps, err := parseDistPoints(e.Value); err == nil {
					for _, dp := range dps {
						c.CRLDistributionPoints = append(c.CRLDistributionPoints, dp.uris()...)
					}
				}
			}
		}
	}
	return c, nil
}

func readExtensions(el cryptobyte.String) ([]pkix.Extension, error) {
	var outer, seq cryptobyte.String
	if !el.ReadASN1(&outer, cbasn1.Tag(3).ContextSpecific().Constructed()) || !outer.ReadASN1(&seq, cbasn1.SEQUENCE) || !outer.Empty() {
		return nil, errors.New("malformed extensions")
	}
	var exts []pkix.Extension
	for !seq.Empty() {
		var e cryptobyte.String
		if !seq.ReadASN1Element(&e, cbasn1.SEQUENCE) {
			return nil, errors.New("malformed extension")
		}
		var ext pkix.Extension
		if rest, err := asn1.Unmarshal(e, &ext); err != nil || len(rest) > 0 {
			return nil, errors.New("malformed extension")
		}
		exts = append(exts, ext)
	}
	return exts, nil
}

// dsaWithoutParams reports whether spki is a DSA key whose parameters are
// absent (or NULL), and returns its public value.
func dsaWithoutParams(spki cryptobyte.String) (*big.Int, bool) {
	var seq, alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !spki.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1ObjectIdentifier(&oid) || !oid.Equal(oidPublicKeyDSA) {
		return nil, false
	}
	if !alg.Empty() && !bytes.Equal(alg, []byte{0x05, 0x00}) {
		return nil, false // parameters present
	}
	var bs asn1.BitString
	if !seq.ReadASN1BitString(&bs) {
		return nil, false
	}
	y := new(big.Int)
	in := cryptobyte.String(bs.RightAlign())
	if !in.ReadASN1Integer(y) || !in.Empty() || y.Sign() <= 0 {
		return nil, false
	}
	return y, true
}

// dummyDSASPKI returns spki with DSA parameters p = q = g = 1, which
// crypto/x509 accepts; the key is replaced after parsing.
func dummyDSASPKI(spki cryptobyte.String) []byte {
	var seq, alg, key cryptobyte.String
	spki.ReadASN1(&seq, cbasn1.SEQUENCE)
	seq.ReadASN1(&alg, cbasn1.SEQUENCE)
	seq.ReadAnyASN1Element(&key, nil)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidPublicKeyDSA)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(1)
				b.AddASN1Int64(1)
				b.AddASN1Int64(1)
			})
		})
		b.AddBytes(key)
	})
	return b.BytesOrPanic()
}

// ParseCertificates reads certificates from PEM (every CERTIFICATE block)
// or, when data holds no PEM, from one DER certificate.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	sawPEM := false
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawPEM = true
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if !sawPEM {
		c, err := ParseCertificate(data)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("certvalidation: no certificate found")
	}
	return certs, nil
}

// ParseCRLs reads CRLs from PEM (every X509 CRL block) or, when data holds
// no PEM, one DER CRL. It returns their DER, each checked to parse.
func ParseCRLs(data []byte) ([][]byte, error) {
	var out [][]byte
	rest := data
	sawPEM := false
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawPEM = true
		if block.Type != "X509 CRL" {
			continue
		}
		if _, err := x509.ParseRevocationList(block.Bytes); err != nil {
			return nil, fmt.Errorf("certvalidation: %w", err)
		}
		out = append(out, block.Bytes)
	}
	if !sawPEM {
		if _, err := x509.ParseRevocationList(data); err != nil {
			return nil, fmt.Errorf("certvalidation: %w", err)
		}
		out = append(out, data)
	}
	if len(out) == 0 {
		return nil, errors.New("certvalidation: no CRL found")
	}
	return out, nil
}

// fileExtensions are the names of files read from a directory of
// certificates or CRLs; other files (an index, a README) are ignored.
var fileExtensions = []string{".pem", ".crt", ".cer", ".der", ".crl"}

// expandPaths lists the files named by paths: a file as is, a directory as
// its regular files with a known extension, in name order.
func expandPaths(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if slices.Contains(fileExtensions, strings.ToLower(filepath.Ext(e.Name()))) {
				full := filepath.Join(p, e.Name())
				if fi, err := os.Stat(full); err == nil && fi.Mode().IsRegular() {
					files = append(files, full)
				}
			}
		}
	}
	return files, nil
}

// LoadCertificates reads the certificates of PEM or DER files, and of the
// files of directories (.pem, .crt, .cer, .der).
func LoadCertificates(paths ...string) ([]*x509.Certificate, error) {
	files, err := expandPaths(paths)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		certs, err := ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

// LoadCRLs reads the CRLs (PEM or DER) of files, and of the files of
// directories (.pem, .crl, .der).
func LoadCRLs(paths ...string) ([][]byte, error) {
	files, err := expandPaths(paths)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crls, err := ParseCRLs(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, crls...)
	}
	return out, nil
}
