// Package cms holds the CMS primitives that tsa and signing share: the
// algorithm identifiers and hash OIDs (RFC 5754), AlgorithmIdentifier
// reading (RFC 5652), signature verification with RSA PKCS #1 v1.5,
// RSASSA-PSS (RFC 4055) and ECDSA (RFC 5758), and a few DER writers.
//
// It is imported by tsa and signing, and imports nothing of ours. Its
// errors carry no package prefix: callers wrap them with their own.
package cms
