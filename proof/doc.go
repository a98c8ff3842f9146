// Package proof keeps the platform's evidence: canonical evidence records
// in an append-only Merkle log, sealed in batches by signed tree heads and
// RFC 3161 time-stamp tokens, with inclusion and consistency proofs and
// self-contained proof bundles that verify offline.
//
// # Records
//
// A [Record] is one piece of evidence: an event type (submission accepted,
// delivered, acknowledged, timestamp issued, proof read...), the exchange
// or operation it concerns, the actors (certificate SHA-256 fingerprints
// and subjects), digests of the payloads (never the payloads), the time,
// and the ids of the records it follows. Its encoding
// ([Record.MarshalBinary], version 1) is a length-prefixed binary form:
// fixed field order, big-endian lengths and counts, times as int64
// nanoseconds, attributes sorted by key. It was chosen over JSON with RFC
// 8785 canonicalisation and over canonical CBOR because it has exactly one
// encoding per record by construction — no number formatting, string
// escaping or map ordering to get right in every verifier — and a verifier
// in any language reads it in a few dozen lines. [UnmarshalRecord] accepts
// only that one encoding (it re-encodes and compares), so the same record
// always hashes the same. testdata/record-v1.hex pins the bytes.
//
// # The log
//
// Each record is a leaf of a Merkle tree hashed as RFC 9162 section 2.1
// (RFC 6962): leaf SHA-256(0x00 || record), node SHA-256(0x01 || left ||
// right), with github.com/transparency-dev/merkle. The store keeps every
// perfect subtree's hash, so an inclusion proof (RFC 9162 section 2.1.3,
// [InclusionProof]) of any record against any later tree head, and a
// consistency proof (section 2.1.4, [ConsistencyProof]) between any two
// tree heads, read O(log n) nodes.
//
// [Log.Append] is a group commit: records queue for one sequencer, which
// closes a batch at Config.BatchSize records or once the previous batch is
// written (after Config.BatchWait, if set), computes the new tree, signs
// its checkpoint and has it time-stamped, then writes the batch — records,
// nodes, tree head — in one durable transaction. Append returns only then.
//
// # Tree heads
//
// A tree head is a checkpoint (c2sp.org/tlog-checkpoint: origin, size,
// base64 root) in a signed note (c2sp.org/signed-note), so that witnesses
// can cosign it. golang.org/x/mod/sumdb/note signs with Ed25519 only; our
// keys live in HSMs that offer ECDSA, so [NoteSigner] writes signature
// type 0x02 of signed-note — an ASN.1 ECDSA P-256 signature over SHA-256
// of the note text, key ID the first four bytes of SHA-256 of the key's
// DER SubjectPublicKeyInfo, as github.com/transparency-dev/witness does.
// Every checkpoint also gets an RFC 3161 token on SHA-256 of the whole
// signed note, from a [Timestamper] (an in-process tsa.Authority or a
// tsa.Client).
//
// # Stores
//
// [Store] is the storage interface; [BoltStore] is the embedded one, a
// bbolt file and a write-ahead log; [PGStore] keeps the log in PostgreSQL
// for several nodes, every node appending and the holder of a session
// advisory lock sealing. A seal integrates first and signs after (as
// Tessera does): the records become leaves with the tree's nodes, size and
// root in one durable write ([Store.Integrate]), and only then is the
// checkpoint of that stored tree signed, time-stamped and its head written
// ([Store.PutHead]). The store keeps one root for each size, so a
// sequencer that dies or loses its database after signing leaves a
// pending tree that the next sequencer signs as it is: every checkpoint
// ever signed is of the published log (same size, same root), published
// itself or superseded by another signature of the same tree.
// proof/prooftest.RunStore is the conformance suite both pass. [Audit]
// walks a whole store and names the first place that does not check.
//
// # Receipts
//
// Where a standard receipt is needed, [SignReceipt] signs a record on its
// own as CMS (CAdES B-T with package signing), which `openssl cms -verify`
// accepts.
//
// # Bundles
//
// A proof bundle ([Export], [VerifyBundle]) is one ZIP file: manifest.json
// (format "pec-proof-bundle/2"), records/<index>.bin (the canonical
// records: the one asked for, then those it follows), records/<index>.json
// (a readable copy of each, see below), checkpoint (the signed note),
// checkpoint.tst (the RFC 3161 token on it), certs/log.pem (the log key's
// certificate and chain), certs/tsa.pem (the TSA's chain), and
// revocation/<n>.der: the CRLs and OCSP responses (DER) that package
// certvalidation used, at export, to validate the log key's certificate
// and the TSA's certificate at the token's time, each listed in the
// manifest's "revocation" array with its kind ("crl" or "ocsp") and
// SHA-256. The array is empty when the export had no validator, or when
// the certificates name no CRL distribution point and no OCSP responder
// (the development PKI). [VerifyBundle] validates both certificates again
// on that data alone, offline: a certificate revoked before the
// time-stamp, a certificate naming a distribution point or a responder
// whose status the data does not establish, or an item that does not
// parse or that neither validation could use fails the "revocation"
// check.
//
// Entries are stored uncompressed, in a fixed order, each dated (MS-DOS
// time and the Info-ZIP extended timestamp, UTC, to the second, clamped to
// 1980-2106): the entries of a record with that record's time, every other
// entry with the time of the bundle's evidence (the first record). So a
// bundle's bytes follow from its content alone, and the same id always
// gives the same bytes; the reader rebuilds the ZIP and rejects any other
// bytes.
//
// The readable copy records/<index>.json (named by the manifest record's
// "json" field) is the record in indented JSON: a "note" naming the binary
// file, then id, type, time (RFC 3339, UTC, to the nanosecond), subject,
// actors (role, subject, fingerprint in hex), digests (name, algorithm,
// value in hex), previous and attributes (an object). It is evidence of
// nothing: the binary record alone is hashed into the log. A verifier in
// another language may ignore it. [ReadBundle] renders it again from the
// binary record and compares, like every other byte, so a bundle whose
// readable copy says anything else — another sender, another time, a field
// added — does not verify (check "bundle"); and [Summarize], which `pec
// proof show` prints, reads only the binary records. The copy's form is
// part of format 2 and does not change.
//
// Format 1 ("pec-proof-bundle/1", written before the readable copies) has
// no records/<index>.json and undated entries; ReadBundle and VerifyBundle
// still accept it, in its own canonical form.
//
// # Showing a bundle
//
// [Summarize] turns a bundle that VerifyBundle accepted into a [Summary]:
// each record (id, type, time, subject, actors, digests, the records it
// answers, attributes, its leaf index and inclusion proof), the checkpoint
// (origin, size, root, note key, the log certificate that signed it) and
// the token (time, serial, policy, the TSA certificate that signed it),
// for a person (text) or a program (JSON with snake_case names). A bundle
// that did not verify has no summary ([ErrNotVerified]) but the failed
// check ([FailedSummary]): nothing unproven is shown as if it were proven.
package proof
