// Package signing creates and verifies CMS signatures (RFC 5652) in the
// CAdES baseline profiles (ETSI EN 319 122-1) and PDF signatures in the
// PAdES baseline profiles (ETSI EN 319 142-1), with keys from package hsm
// (any crypto.Signer) and signature timestamps from package tsa.
//
// # Signing
//
// A [Signer] holds one key and its certificate chain. [Signer.Sign] makes
// an attached or detached CAdES signature, [Signer.SignDigest] a detached
// one of a digest the caller computed (hash-only signing: the document
// never leaves the client), and [Signer.SignPDF] a signed PDF. The level
// is B-B — the signed attributes content-type, message-digest,
// signing-time and signing-certificate-v2 (RFC 5035) — or B-T with a
// [Timestamper]: an RFC 3161 token over the signature value in the
// id-aa-signatureTimeStampToken unsigned attribute (RFC 3161 appendix A).
// Digests are SHA-256, SHA-384 or SHA-512 (RFC 5754); signatures RSA
// PKCS #1 v1.5, RSASSA-PSS (RFC 4055) or ECDSA (RFC 5758).
//
// A PAdES signature is an incremental update (ISO 32000-1 section 7.5.6):
// the original bytes are kept, a signature field with its widget
// (visible or not) and a signature dictionary of subfilter
// ETSI.CAdES.detached are appended, and /Contents holds a detached CAdES
// signature over the /ByteRange — the whole file but /Contents. PAdES
// leaves signing-time out of the CMS: the time is the dictionary's /M
// (ETSI EN 319 142-1 section 6.3).
//
// # Profiles and the service
//
// [Config] is the signing section of pec.yaml: named profiles, each a
// key label, a certificate file, a format, a digest, whether to
// timestamp, and the clients allowed to use it. [Service] loads them and
// serves [Service.Sign] and [Service.SignDigests] (batches): it refuses a
// client the profile does not allow ([ErrNotAllowed], nothing is signed)
// and records every operation through an [evidence.Appender] before
// returning the signature.
//
// # Verification
//
// [Verifier.Verify] checks a CMS signature (DER, BER or PEM, several
// SignerInfos) or every signature of a PDF and returns a [Report] in the
// spirit of ETSI EN 319 102-1: an [Indication] (TOTAL-PASSED,
// TOTAL-FAILED, INDETERMINATE) with a [SubIndication], the signer, the
// claimed signing time, the signature timestamp's time and the checks
// performed. The building blocks run in the standard's order: format,
// identification of the signing certificate (sid and ESS
// signing-certificate attribute), cryptographic verification (the data,
// then the signature value), the signature timestamp as proof of
// existence, and X.509 validation through a [ChainValidator] — at the
// validation time, or at the proven time when the certificate has expired
// or been revoked since (past signature validation, section 5.6.2.4).
// [X509Validator] validates with crypto/x509 against trust anchors;
// package certvalidation plugs in through the same interface.
package signing
