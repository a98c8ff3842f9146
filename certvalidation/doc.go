// Package certvalidation will build and check X.509 certification paths
// (RFC 5280 section 6): trust anchors per purpose, CRL (RFC 5280) and OCSP
// (RFC 6960) revocation with caches, validation at a point in time, and
// reports that become evidence. Until it exists, callers check chains with
// crypto/x509 against the configured roots.
package certvalidation
