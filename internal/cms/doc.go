// Package cms is the one CMS layer of tsa and signing: the reader of
// SignedData (RFC 5652 sections 3 and 5, DER, or BER converted), the signer
// lookup, the signed attributes (content-type, message-digest,
// signing-time; ESS signing-certificate, RFC 2634 and RFC 5035), and the
// verification of signatures under one algorithm policy — RSA PKCS #1
// v1.5, RSASSA-PSS (RFC 4055), ECDSA (RFC 5758, parameters absent),
// Ed25519 (RFC 8419), SHA-256/384/512 (RFC 5754), SHA-1 and MD5 refused.
// Each caller checks its own profile on top: tsa the TSTInfo and the TSA
// certificate (RFC 3161), signing CAdES and PAdES.
//
// It also holds the algorithm identifiers and a few DER writers that both
// packages use to make signatures, and the envelopes of the exchange:
// EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083,
// AES-GCM per RFC 5084), written and read as streams in constant memory, to
// recipients by RSA-OAEP or PKCS #1 v1.5 key transport, ECDH key agreement
// (RFC 5753) and X25519 (RFC 8418), or a key-encryption key, under one
// policy (envpolicy.go).
//
// It imports nothing of ours. Its errors carry no package prefix, and
// their kinds (ErrMalformed, ErrUnsupported, ...) are for errors.Is:
// callers wrap them with their own.
package cms
