// Package devpki issues the development PKI that `pec init` writes and that
// tests use: a root CA, service certificates (the RFC 3161 TSA, the TLS
// servers) and client certificates for partners, and the revocation data
// of its root: CRLs (RFC 5280 section 5) and OCSP responses (RFC 6960).
//
// It is not a production CA: certificates are issued from templates with
// fixed profiles (RFC 5280 section 4.2), keys come from the caller as a
// crypto.Signer (an HSM key or a software key), and nothing is stored
// (package internal/devca keeps what the development CA issued and revoked).
package devpki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// Validity periods of the development certificates.
const (
	RootValidity = 10 * 365 * 24 * time.Hour
	LeafValidity = 2 * 365 * 24 * time.Hour
)

// backdate covers clock skew between the machine that issued a certificate
// and the peers that check it.
const backdate = time.Hour

// CA is a certification authority whose key is held by Signer.
type CA struct {
	Cert   *x509.Certificate
	Signer crypto.Signer

	// Revocation, when set, is written into every end-entity certificate
	// Issue makes: where relying parties find its status.
	Revocation RevocationURLs
}

// RevocationURLs are where the status of a CA's certificates is published:
// a CRL distribution point (RFC 5280 section 4.2.1.13) and an OCSP
// responder named by the authority information access extension (section
// 4.2.2.1, RFC 6960). Plain http URLs, as RFC 5280 section 4.2.1.13 and
// RFC 5019 section 5 expect: the data is signed, and fetching it must not
// need a TLS connection that would itself need revocation data.
type RevocationURLs struct {
	CRL  string
	OCSP string
}

// NewRootCA self-signs a root CA certificate for signer's public key.
func NewRootCA(signer crypto.Signer, commonName string, now time.Time) (*CA, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"PEC development"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	cert, err := create(tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("devpki: root CA: %w", err)
	}
	return &CA{Cert: cert, Signer: signer}, nil
}

// Issue signs template for pub. The serial number, the authority key
// identifier and the subject key identifier are filled in, and, for an
// end-entity certificate, the CA's revocation URLs when it has some and
// the template names none.
func (ca *CA) Issue(template *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Signer == nil {
		return nil, errors.New("devpki: no CA")
	}
	t := *template
	if !t.IsCA {
		if ca.Revocation.CRL != "" && len(t.CRLDistributionPoints) == 0 {
			t.CRLDistributionPoints = []string{ca.Revocation.CRL}
		}
		if ca.Revocation.OCSP != "" && len(t.OCSPServer) == 0 {
			t.OCSPServer = []string{ca.Revocation.OCSP}
		}
	}
	return create(&t, ca.Cert, pub, ca.Signer)
}

// IssueTSA issues a time-stamping certificate: the only extended key usage is
// id-kp-timeStamping, marked critical as RFC 3161 section 2.3 requires.
func (ca *CA) IssueTSA(pub crypto.PublicKey, commonName string, now time.Time) (*x509.Certificate, error) {
	ekuExt, err := TimeStampingEKUExtension()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:         pkix.Name{CommonName: commonName, Organization: []string{"PEC development"}},
		NotBefore:       now.Add(-backdate),
		NotAfter:        now.Add(LeafValidity),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{ekuExt},
	}
	cert, err := ca.Issue(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("devpki: TSA certificate: %w", err)
	}
	return cert, nil
}

// IssueServer issues a TLS server certificate for the given names and
// addresses.
func (ca *CA) IssueServer(pub crypto.PublicKey, dnsNames []string, ips []net.IP, now time.Time) (*x509.Certificate, error) {
	cn := "pec server"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: cn, Organization: []string{"PEC development"}},
		NotBefore: now.Add(-backdate),
		NotAfter:  now.Add(LeafValidity),
		KeyUsage:  x509.KeyUsageDigitalSignature,
		// clientAuth too: the node authenticates with it to the partners'
		// webhook endpoints (mutual TLS).
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}
	cert, err := ca.Issue(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("devpki: server certificate: %w", err)
	}
	return cert, nil
}

// IssueClient issues a TLS client certificate (and S/MIME-capable signing
// certificate) for a partner or a person named commonName, valid for
// LeafValidity.
func (ca *CA) IssueClient(pub crypto.PublicKey, commonName, organization string, now time.Time) (*x509.Certificate, error) {
	return ca.IssueClientFor(pub, commonName, organization, now, LeafValidity)
}

// IssueClientFor is IssueClient with a validity of the caller's choice.
func (ca *CA) IssueClientFor(pub crypto.PublicKey, commonName, organization string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, errors.New("devpki: client certificate: the validity must be positive")
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: commonName, Organization: []string{organization}},
		NotBefore: now.Add(-backdate),
		NotAfter:  now.Add(validity),
		// A partner signs with the same key what it answers (an exchange's
		// acknowledgment): digitalSignature and nonRepudiation, and the
		// signing purposes OpenSSL and certvalidation check signers for.
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDDocumentSigning},
	}
	cert, err := ca.Issue(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("devpki: client certificate: %w", err)
	}
	return cert, nil
}

// IssueEncryption issues the encryption certificate of a partner: what
// the dossiers sent to it are encrypted for (CMS key agreement for an EC
// key, key transport for RSA; RFC 5280 section 4.2.1.3), purpose
// emailProtection as S/MIME tools expect.
func (ca *CA) IssueEncryption(pub crypto.PublicKey, commonName, organization string, now time.Time) (*x509.Certificate, error) {
	usage := x509.KeyUsageKeyAgreement
	if _, rsaKey := pub.(*rsa.PublicKey); rsaKey {
		usage = x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName, Organization: []string{organization}, OrganizationalUnit: []string{"encryption"}},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(LeafValidity),
		KeyUsage:    usage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	cert, err := ca.Issue(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("devpki: encryption certificate: %w", err)
	}
	return cert, nil
}

// OIDDocumentSigning is id-kp-documentSigning (RFC 9336).
var OIDDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}

// IssueDocumentSigner issues a certificate for a key that signs documents
// (CAdES, PAdES): key usage digitalSignature and nonRepudiation (RFC 5280
// section 4.2.1.3), extended key usage documentSigning (RFC 9336) and
// emailProtection — the purpose OpenSSL (`cms -verify`) and NSS (pdfsig)
// check signers against by default.
func (ca *CA) IssueDocumentSigner(pub crypto.PublicKey, commonName, organization string, now time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject:            pkix.Name{CommonName: commonName, Organization: []string{organization}},
		NotBefore:          now.Add(-backdate),
		NotAfter:           now.Add(LeafValidity),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDDocumentSigning},
	}
	cert, err := ca.Issue(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("devpki: document signing certificate: %w", err)
	}
	return cert, nil
}

// OIDTimeStamping is id-kp-timeStamping (RFC 3161 section 2.3).
var OIDTimeStamping = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}

// TimeStampingEKUExtension is a critical extendedKeyUsage extension holding
// only id-kp-timeStamping. crypto/x509 cannot mark the extension critical
// itself, so it is added raw.
func TimeStampingEKUExtension() (pkix.Extension, error) {
	value, err := asn1.Marshal([]asn1.ObjectIdentifier{OIDTimeStamping})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("devpki: encode EKU: %w", err)
	}
	return pkix.Extension{Id: []int{2, 5, 29, 37}, Critical: true, Value: value}, nil
}

func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	t := *tmpl
	t.SerialNumber = serial.Add(serial, big.NewInt(1)) // never zero (RFC 5280 section 4.1.2.2)
	if t.SubjectKeyId == nil {
		spki, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(spki)
		t.SubjectKeyId = sum[:20]
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// CertPEM encodes certificates as consecutive PEM blocks.
func CertPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devpki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM decodes every CERTIFICATE block of data; other blocks are
// skipped. It fails when there is none.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("devpki: parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("devpki: no PEM certificate found")
	}
	return certs, nil
}

// LoadCertsPEM reads a PEM file of one or more certificates.
func LoadCertsPEM(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}
