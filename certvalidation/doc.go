// Package certvalidation builds and validates X.509 certification paths:
// the gateway's mutual TLS, signature verification and proof verification
// all rest on it.
//
// # Path building and validation
//
// [Validator.Validate] builds every candidate path from a certificate to
// the trust anchors of a purpose, through the intermediates of the request,
// of the configuration and (optionally) fetched from the authority
// information access caIssuers URL (RFC 5280 section 4.2.2.1). All issuers
// that match by name are tried, so cross-certificates and several CA
// certificates under one name each get their chance (RFC 4158); the report
// says why each path failed. Each path is checked with the algorithm of RFC
// 5280 section 6.1, written here rather than taken from crypto/x509 so that
// every decision can be reported and bounded:
//
//   - signatures (with DSA parameter inheritance, section 6.1.4 (f)) and
//     validity at the validation time, name chaining (section 7.1 name
//     comparison);
//   - basic constraints and path length (6.1.4 (k)-(m)), key usage (6.1.4
//     (n)), critical extensions not understood (6.1.4 (o), 6.1.5 (f));
//   - name constraints on directory names, email addresses, DNS names, URIs
//     and IP addresses (6.1.3 (b), (c), 6.1.4 (g)), from every CA of the
//     path, the trust anchor's included; a wildcard DNS name stands for
//     the names it matches: refused when any of them may be in an excluded
//     subtree (the CVE-2025-61727 pattern), accepted in a permitted one
//     only when all are; a name that cannot be compared (a URI with no host
//     name, a subject emailAddress that is no mailbox) fails every
//     constraint on its type;
//   - certificate policies, policy mappings and policy constraints (6.1.3
//     (d)-(f), 6.1.4 (a), (b), (h)-(j), 6.1.5 (g)), with the policy graph of
//     RFC 9618 in place of the tree;
//   - the purpose: key usage and extended key usage of the end certificate
//     (and of intermediate CAs that carry one), a host name or an email
//     address, and the weak-algorithm policy (MD5 and SHA-1 signatures, RSA
//     and DSA keys under 2048 bits), which [Config.AllowWeakAlgorithms]
//     turns off.
//
// # Trust anchors
//
// A trust anchor that issues the next certificate of the path is used as a
// CA, and its certificate is held to what a CA certificate must be: basic
// constraints with cA set, keyCertSign when it has a key usage, no
// critical extension this package does not implement, a key that can
// verify signatures and is not weak, name constraints that parse and are names. Its
// constraints then apply below it, as if it were the first CA of the path:
// its name constraints are the initial permitted and excluded subtrees of
// RFC 5280 section 6.1.1 (b) and (c), its path length constraint bounds
// the intermediates, its extended key usage the purpose (RFC 5937 section
// 3's enforced trust anchor constraints; browsers and crypto/x509 read
// root certificates the same way). A certificate that is itself a trust
// anchor is trusted as it is.
//
// # Certificate profile
//
// The certificates a CA issued (intermediates and end certificate; not the
// trust anchor's own, see [ProfileCheck]) must follow the profile of RFC
// 5280 section 4, as strict validators require: names of subjectAltName and
// of name constraints that are names of their type (a DNS name in the
// preferred syntax, a wildcard only as the whole leftmost label, one
// mailbox per rfc822Name, absolute URIs), and the issuance rules named by
// [ProfileCheck]: serial numbers, authority and subject key identifiers,
// critical basic constraints in CA certificates, no empty extended key
// usage, no keyCertSign or name constraints in an end-entity certificate, a
// critical subjectAltName under an empty subject, critical policy
// constraints, and the CRL number of CRLs (section 5.2.3). A certificate
// that breaks one is refused as [ReasonMalformedCertificate], a CRL as
// [ReasonMalformedCRL]; [Config.Relax] turns named rules off for the paths
// of a legacy PKI's anchors. Name syntax cannot be turned off.
//
// # Revocation
//
// The certificates of an accepted path are then checked for revocation,
// under the purpose's [RevocationPolicy]: OCSP (RFC 6960; responses checked
// for their CertID, the issuer's or a delegated responder's signature with
// the id-kp-OCSPSigning extended key usage, freshness and, optionally, a
// nonce, RFC 8954) and CRLs (RFC 5280 section 6.3: issuer and scope,
// issuing distribution points, reasons, indirect CRLs, delta CRLs, the
// CRL issuer's own path and key usage). Data given with the request or kept
// locally is used first, then the caches, then responders and distribution
// points over HTTP (RFC 5019 profile), with size and time bounds and one
// fetch per URL at a time shared by all waiters. Cached data is reused
// until its nextUpdate, and at most Config.Cache.MaxAge.
//
// # Validation at a time T
//
// [Options.At] validates at a past (or future) time, as a signature's
// timestamp proves it: certificates must be valid at T, and revocation data
// must either have been current at T (thisUpdate ≤ T ≤ nextUpdate) or have
// been issued after T while the certificate was still valid, in which case
// a revocation dated after T does not count.
//
// # Reports
//
// Every validation returns a [Report]: the chain with each certificate's
// DER, every check, every CRL and OCSP response consulted with its digest
// (and bytes), the candidate paths and why they failed. It is meant to be
// embedded in evidence. An invalid chain is an [*Error] with a [Reason].
//
// # Bounds
//
// [Limits] bound the work one chain can cause: path depth, candidate paths,
// path-building steps, name-constraint comparisons, policy-graph size,
// fetches per validation; fetched data is bounded in size. A chain that
// reaches a bound before any path is valid fails closed, as
// [ReasonLimitExceeded] with the bound named in the detail
// ("limits.max_candidates: ..."), whatever the candidates tried before
// gave: a path beyond the bound might have been valid. (Under
// RevocationPrefer, revocation data not fetched for want of budget is a
// warning, as any missing data is.)
package certvalidation
