// Package proof will keep the platform's evidence: canonical evidence records
// in an append-only Merkle log (RFC 9162 hashing), signed tree heads as C2SP
// signed checkpoints with RFC 3161 tokens, inclusion and consistency proofs,
// and self-contained proof bundles verifiable offline.
package proof
