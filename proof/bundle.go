package proof

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"pec/certvalidation"
	"pec/evidence"
	"pec/tsa"
)

// OIDEvidenceLog is the extended key usage that a certificate must carry
// to certify the key of an evidence log's checkpoints: without it, anyone
// holding a certificate under the same root (a partner's client
// certificate) could sign a checkpoint of a tree of their own. It is under
// 2.999, the example arc of X.660, until PEC has an arc of its own.
var OIDEvidenceLog = asn1.ObjectIdentifier{2, 999, 9162, 1}

// IsEvidenceLogCertificate reports whether cert carries OIDEvidenceLog.
func IsEvidenceLogCertificate(cert *x509.Certificate) bool {
	for _, oid := range cert.UnknownExtKeyUsage {
		if oid.Equal(OIDEvidenceLog) {
			return true
		}
	}
	return false
}

// BundleFormat names the proof bundle format that Export writes: version
// 2, whose ZIP entries are dated and whose records each have a readable
// JSON copy beside the canonical binary one.
const BundleFormat = "pec-proof-bundle/2"

// BundleFormatV1 names version 1, which ReadBundle and VerifyBundle still
// accept: undated entries and no readable copies, otherwise the same.
const BundleFormatV1 = "pec-proof-bundle/1"

// MaxBundleSize bounds a bundle read from outside.
const MaxBundleSize = 16 << 20

// maxBundleRecords bounds the records of one bundle: the record asked for
// and those it follows.
const maxBundleRecords = 64

// maxBundleRevocation bounds the CRLs and OCSP responses of one bundle.
const maxBundleRevocation = 32

// Manifest is manifest.json, the first file of a bundle.
type Manifest struct {
	Format   string           `json:"format"` // BundleFormat (or BundleFormatV1)
	Origin   string           `json:"origin"` // the log, and the key name of its checkpoints
	Evidence string           `json:"evidence"`
	Records  []ManifestRecord `json:"records"`
	TreeHead ManifestHead     `json:"tree_head"`
	// Certificates is the log key's certificate, then its chain (PEM).
	Certificates string `json:"certificates"`
	// TSACertificates is the TSA's chain, if the token's certificates do
	// not suffice ("" otherwise).
	TSACertificates string `json:"tsa_certificates,omitempty"`
	// Revocation lists the revocation data (CRLs, OCSP responses) that
	// the validation of the log key's and the TSA's certificates relied
	// on at export, one file each; empty when the export had no
	// certificate validator, or when the certificates name no CRL
	// distribution point and no OCSP responder.
	Revocation []ManifestRevocation `json:"revocation"`
}

// ManifestRevocation is one piece of revocation data of a bundle.
type ManifestRevocation struct {
	File   string `json:"file"`   // revocation/<n>.der
	Kind   string `json:"kind"`   // RevocationCRL or RevocationOCSP
	SHA256 string `json:"sha256"` // of the file, hex
}

// Kinds of revocation data.
const (
	RevocationCRL  = "crl"  // a DER CRL (RFC 5280), complete or delta
	RevocationOCSP = "ocsp" // a DER OCSPResponse (RFC 6960)
)

// RevocationData is one CRL or OCSP response of a bundle.
type RevocationData struct {
	Kind string // RevocationCRL or RevocationOCSP
	Data []byte // DER
}

// ManifestRecord is one record of a bundle and its inclusion proof in the
// bundle's tree head.
type ManifestRecord struct {
	Index  uint64 `json:"index"`
	ID     string `json:"id"`
	File   string `json:"file"`   // records/<index>.bin, the canonical encoding
	SHA256 string `json:"sha256"` // of the file, hex
	// JSON is records/<index>.json, the readable copy of the record
	// (format 2; "" in format 1). It is derived from File and proves
	// nothing: see [ReadBundle].
	JSON      string   `json:"json,omitempty"`
	Inclusion []string `json:"inclusion"` // RFC 9162 inclusion proof, base64 hashes
}

// ManifestHead is the tree head the records are proven in.
type ManifestHead struct {
	Size       uint64 `json:"size"`
	Root       string `json:"root"`       // base64
	Checkpoint string `json:"checkpoint"` // file: the signed note
	Timestamp  string `json:"timestamp"`  // file: RFC 3161 TimeStampToken (DER) on SHA-256 of the checkpoint file
}

// Bundle is a read bundle.
type Bundle struct {
	Manifest        Manifest
	Records         []*evidence.Record // decoded, in manifest order
	RecordData      [][]byte           // as encoded
	Inclusion       [][][]byte
	Root            []byte
	Checkpoint      []byte
	Token           []byte
	Certificates    []*x509.Certificate
	TSACertificates []*x509.Certificate
	Revocation      []RevocationData // in manifest order
	files           map[string][]byte

	// verified is what VerifyBundle established, once every check
	// passed; nil before (ReadBundle) or after a failed check.
	verified *verification
}

// ErrMalformedBundle: the bytes are not a proof bundle (not a ZIP, no
// manifest, another format).
var ErrMalformedBundle = errors.New("proof: malformed bundle")

// BundleError names the check a bundle failed.
type BundleError struct {
	Check string // "bundle", "record 3 (id ...)", "tree head", "timestamp", "certificates", "revocation"
	Err   error
}

func (e *BundleError) Error() string { return "proof: bundle: " + e.Check + ": " + e.Err.Error() }
func (e *BundleError) Unwrap() error { return e.Err }

// ExportOptions are the certificates a bundle carries, and the validator
// that gathers their revocation data.
type ExportOptions struct {
	LogChain []*x509.Certificate // the tree-head key's certificate, then its chain; required without LogCerts
	// LogCerts, when set, are the log keys' certificates, of the current
	// key and of those it replaced: the bundle carries the one whose key
	// signed its tree head (LogChain is then not used).
	LogCerts *LogCerts
	TSAChain []*x509.Certificate // the TSA's chain, when its tokens lack intermediates

	// Validator, when set, validates the log key's certificate and the
	// certificate of the tree head's TSA at the token's time, with
	// revocation policy "prefer" (fetching CRLs and OCSP responses as
	// needed), and the bundle carries every CRL and OCSP response the
	// validations used. nil: the bundle carries no revocation data.
	Validator *certvalidation.Validator
	// Roots are the trust anchors of those validations; empty: the
	// self-signed certificates of LogChain, TSAChain and the token, or
	// when there are none the Validator's anchors of the purpose, or when
	// it has none the last certificate of each chain.
	Roots []*x509.Certificate

	// Related are more records the bundle holds, with the records they
	// follow: the other steps of an exchange, say (up to 64 records in
	// all, the evidence id's first).
	Related []string
}

// Export makes the proof bundle of the evidence id: the record, the
// records it follows (through Previous, up to 64 in all), their inclusion
// proofs in the first tree head that holds them all (the head that sealed
// the latest of them), that head's signed checkpoint and time-stamp token,
// the certificates, and (with opts.Validator) the revocation data of the
// certificates. Since that head never changes, the bytes are the same at
// every export of the id, by the CLI or the API, however the log grew
// since, as long as the revocation data is (a CA's new CRL changes them);
// a consistency proof ties the head to any later one.
func Export(ctx context.Context, s Store, id string, opts ExportOptions) ([]byte, error) {
	if len(opts.LogChain) == 0 && opts.LogCerts == nil {
		return nil, errors.New("proof: export: the log key's certificate is required")
	}
	b := &Bundle{Manifest: Manifest{Format: BundleFormat, Evidence: id}}
	seen := map[string]bool{}
	queue := append([]string{id}, opts.Related...)
	var last uint64
	for len(queue) > 0 && len(b.Records) < maxBundleRecords {
		cur := queue[0]
		queue = queue[1:]
		if seen[cur] {
			continue
		}
		seen[cur] = true
		idx, err := s.Lookup(ctx, cur)
		if err != nil {
			if cur != id && errors.Is(err, ErrNotFound) {
				continue // a link outside the log: the record still names it
			}
			return nil, fmt.Errorf("proof: export: %w", err)
		}
		sr, err := s.Record(ctx, idx)
		if err != nil {
			return nil, fmt.Errorf("proof: export: %w", err)
		}
		rec, err := evidence.UnmarshalRecord(sr.Data)
		if err != nil {
			return nil, fmt.Errorf("proof: export: record %d: %w", idx, err)
		}
		b.Records = append(b.Records, rec)
		b.RecordData = append(b.RecordData, sr.Data)
		b.Manifest.Records = append(b.Manifest.Records, ManifestRecord{Index: idx, ID: rec.ID})
		last = max(last, idx)
		queue = append(queue, rec.Previous...)
	}
	head, err := s.HeadCovering(ctx, last)
	if err != nil {
		return nil, fmt.Errorf("proof: export: %w", err)
	}
	cp, err := ParseCheckpoint(head.Checkpoint[:bytes.LastIndex(head.Checkpoint, []byte("\n\n"))+1])
	if err != nil {
		return nil, fmt.Errorf("proof: export: the checkpoint of tree head %d: %w", head.Size, err)
	}
	b.Manifest.Origin = cp.Origin
	if opts.LogCerts != nil {
		// The certificate of the key that signed this head: the head of
		// a record sealed before a rotation is signed by the old key.
		if opts.LogChain = opts.LogCerts.ChainFor(cp.Origin, head.Checkpoint); opts.LogChain == nil {
			return nil, fmt.Errorf("proof: export: tree head %d is signed by none of the log keys whose certificates are known (key IDs in its note: %08x)", head.Size, NoteKeyIDs(head.Checkpoint, cp.Origin))
		}
	}
	for _, mr := range b.Manifest.Records {
		incl, err := InclusionProof(ctx, s, mr.Index, head.Size)
		if err != nil {
			return nil, fmt.Errorf("proof: export: %w", err)
		}
		b.Inclusion = append(b.Inclusion, incl)
	}
	b.Root, b.Checkpoint, b.Token = head.Root, head.Checkpoint, head.Token
	b.Certificates, b.TSACertificates = opts.LogChain, opts.TSAChain
	b.Manifest.TreeHead = ManifestHead{Size: head.Size}
	if opts.Validator != nil {
		if b.Revocation, err = gatherRevocation(ctx, opts, head.Token); err != nil {
			return nil, fmt.Errorf("proof: export: %w", err)
		}
	}
	return b.encode()
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// encode fills the manifest's derived fields and writes the ZIP: stored
// (not compressed) entries, manifest first, so that the bytes depend on
// the content alone. In format 2 each record's entries carry the record's
// time, the other entries the time of the bundle's evidence (the first
// record), and each record has its readable copy after its binary one; in
// format 1 entries have no times and records no copies.
func (b *Bundle) encode() ([]byte, error) {
	v2 := b.Manifest.Format != BundleFormatV1
	type file struct {
		name string
		data []byte
		time time.Time
	}
	var files []file
	var evidenceTime time.Time
	if v2 {
		evidenceTime = zipTime(b.Records[0].Time)
	}
	for i := range b.Manifest.Records {
		mr := &b.Manifest.Records[i]
		mr.File = "records/" + strconv.FormatUint(mr.Index, 10) + ".bin"
		sum := sha256.Sum256(b.RecordData[i])
		mr.SHA256 = hex.EncodeToString(sum[:])
		mr.Inclusion = make([]string, len(b.Inclusion[i]))
		for j, h := range b.Inclusion[i] {
			mr.Inclusion[j] = base64.StdEncoding.EncodeToString(h)
		}
		mr.JSON = ""
		if !v2 {
			files = append(files, file{mr.File, b.RecordData[i], time.Time{}})
			continue
		}
		mr.JSON = "records/" + strconv.FormatUint(mr.Index, 10) + ".json"
		readable, err := readableCopy(mr.File, b.Records[i])
		if err != nil {
			return nil, err
		}
		t := zipTime(b.Records[i].Time)
		files = append(files, file{mr.File, b.RecordData[i], t}, file{mr.JSON, readable, t})
	}
	b.Manifest.TreeHead.Root = base64.StdEncoding.EncodeToString(b.Root)
	b.Manifest.TreeHead.Checkpoint = "checkpoint"
	b.Manifest.TreeHead.Timestamp = "checkpoint.tst"
	files = append(files, file{"checkpoint", b.Checkpoint, evidenceTime}, file{"checkpoint.tst", b.Token, evidenceTime})
	b.Manifest.Certificates = "certs/log.pem"
	files = append(files, file{"certs/log.pem", pemCerts(b.Certificates), evidenceTime})
	b.Manifest.TSACertificates = ""
	if len(b.TSACertificates) > 0 {
		b.Manifest.TSACertificates = "certs/tsa.pem"
		files = append(files, file{"certs/tsa.pem", pemCerts(b.TSACertificates), evidenceTime})
	}
	b.Manifest.Revocation = make([]ManifestRevocation, len(b.Revocation))
	for i, r := range b.Revocation {
		name := "revocation/" + strconv.Itoa(i) + ".der"
		sum := sha256.Sum256(r.Data)
		b.Manifest.Revocation[i] = ManifestRevocation{File: name, Kind: r.Kind, SHA256: hex.EncodeToString(sum[:])}
		files = append(files, file{name, r.Data, evidenceTime})
	}
	manifest, err := json.MarshalIndent(b.Manifest, "", "  ")
	if err != nil {
		return nil, err
	}
	manifest = append(manifest, '\n')
	files = append([]file{{"manifest.json", manifest, evidenceTime}}, files...)
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store, Modified: f.time})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// The times a ZIP entry can carry: MS-DOS dates start in 1980, and the
// extended timestamp field (Info-ZIP "UT") is an unsigned 32-bit count of
// seconds.
var (
	zipTimeMin = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	zipTimeMax = time.Unix(math.MaxUint32, 0).UTC()
)

// zipTime is the entry time of a record's time: in UTC, so that the
// MS-DOS fields do not depend on the exporter's time zone, to the second
// (the extended timestamp's unit), and within what ZIP can say.
func zipTime(t time.Time) time.Time {
	t = t.UTC().Truncate(time.Second)
	switch {
	case t.Before(zipTimeMin):
		return zipTimeMin
	case t.After(zipTimeMax):
		return zipTimeMax
	}
	return t
}

// readableCopy is records/<index>.json: the record in JSON, for a person
// who opens the ZIP. Its form is part of format 2 — a change would make
// the bundles already exported fail ReadBundle's canonical check — so it
// has types of its own, apart from [Summary]'s, which may grow.
func readableCopy(file string, r *evidence.Record) ([]byte, error) {
	type actor struct {
		Role        string `json:"role"`
		Subject     string `json:"subject"`
		Fingerprint string `json:"fingerprint"` // SHA-256 of the certificate, hex
	}
	type digest struct {
		Name      string `json:"name"`
		Algorithm string `json:"algorithm"`
		Value     string `json:"value"` // hex
	}
	type record struct {
		Note       string            `json:"note"`
		ID         string            `json:"id"`
		Type       string            `json:"type"`
		Time       string            `json:"time"` // RFC 3339, UTC, to the nanosecond
		Subject    string            `json:"subject"`
		Actors     []actor           `json:"actors"`
		Digests    []digest          `json:"digests"`
		Previous   []string          `json:"previous"`
		Attributes map[string]string `json:"attributes"`
	}
	c := record{
		Note:       "a readable copy of " + file + ", the canonical record, which alone is the evidence",
		ID:         r.ID,
		Type:       string(r.Type),
		Time:       r.Time.UTC().Format(time.RFC3339Nano),
		Subject:    r.Subject,
		Actors:     []actor{},
		Digests:    []digest{},
		Previous:   append([]string{}, r.Previous...),
		Attributes: map[string]string{},
	}
	for _, a := range r.Actors {
		c.Actors = append(c.Actors, actor{a.Role, a.Subject, hex.EncodeToString(a.Fingerprint[:])})
	}
	for _, d := range r.Digests {
		c.Digests = append(c.Digests, digest{d.Name, d.Algorithm, hex.EncodeToString(d.Value)})
	}
	for _, a := range r.Attributes {
		c.Attributes[a.Key] = a.Value
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func malformedBundle(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedBundle, fmt.Sprintf(format, args...))
}

// ReadBundle reads a bundle without checking its signatures. Bytes that
// are no bundle wrap ErrMalformedBundle; a bundle that is not in the
// canonical form Export writes (any byte changed in a ZIP header, the
// manifest or a file; a readable copy records/<index>.json that is not
// exactly its binary record rendered again) is a *BundleError of check
// "bundle". It reads BundleFormat and BundleFormatV1, each in its own
// canonical form.
func ReadBundle(data []byte) (*Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, malformedBundle("over %d bytes", MaxBundleSize)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, malformedBundle("not a ZIP file: %v", err)
	}
	if len(zr.File) == 0 || zr.File[0].Name != "manifest.json" {
		return nil, malformedBundle("manifest.json is not the first file")
	}
	if len(zr.File) > 2*maxBundleRecords+maxBundleRevocation+8 {
		return nil, malformedBundle("%d files", len(zr.File))
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		if f.UncompressedSize64 > MaxBundleSize || f.Method != zip.Store {
			return nil, &BundleError{Check: "bundle", Err: fmt.Errorf("file %q: not stored, or too large", f.Name)}
		}
		if _, dup := files[f.Name]; dup {
			return nil, &BundleError{Check: "bundle", Err: fmt.Errorf("file %q twice", f.Name)}
		}
		rc, err := f.Open()
		if err != nil {
			return nil, &BundleError{Check: "bundle", Err: fmt.Errorf("file %q: %w", f.Name, err)}
		}
		content, err := io.ReadAll(io.LimitReader(rc, MaxBundleSize+1))
		rc.Close()
		if err != nil {
			return nil, &BundleError{Check: "bundle", Err: fmt.Errorf("file %q: %w", f.Name, err)}
		}
		files[f.Name] = content
	}
	b := &Bundle{files: files}
	dec := json.NewDecoder(bytes.NewReader(files["manifest.json"]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b.Manifest); err != nil {
		return nil, malformedBundle("manifest.json: %v", err)
	}
	if b.Manifest.Format != BundleFormat && b.Manifest.Format != BundleFormatV1 {
		return nil, malformedBundle("format %q, not %q or %q", b.Manifest.Format, BundleFormat, BundleFormatV1)
	}
	if len(b.Manifest.Records) == 0 || len(b.Manifest.Records) > maxBundleRecords {
		return nil, &BundleError{Check: "bundle", Err: fmt.Errorf("%d records", len(b.Manifest.Records))}
	}
	get := func(name string) ([]byte, error) {
		v, ok := files[name]
		if !ok {
			return nil, &BundleError{Check: "bundle", Err: fmt.Errorf("no file %q", name)}
		}
		return v, nil
	}
	for i, mr := range b.Manifest.Records {
		data, err := get(mr.File)
		if err != nil {
			return nil, err
		}
		check := fmt.Sprintf("record %d (id %s)", mr.Index, mr.ID)
		rec, err := evidence.UnmarshalRecord(data)
		if err != nil {
			return nil, &BundleError{Check: check, Err: err}
		}
		if rec.ID != mr.ID {
			return nil, &BundleError{Check: check, Err: fmt.Errorf("the record's id is %q", rec.ID)}
		}
		if i == 0 && rec.ID != b.Manifest.Evidence {
			return nil, &BundleError{Check: check, Err: fmt.Errorf("the first record is not the evidence %q", b.Manifest.Evidence)}
		}
		incl := make([][]byte, len(mr.Inclusion))
		for j, h := range mr.Inclusion {
			if incl[j], err = base64.StdEncoding.DecodeString(h); err != nil || len(incl[j]) != sha256.Size {
				return nil, &BundleError{Check: check, Err: errors.New("inclusion proof: a hash is not 32 bytes of base64")}
			}
		}
		b.Records = append(b.Records, rec)
		b.RecordData = append(b.RecordData, data)
		b.Inclusion = append(b.Inclusion, incl)
	}
	var err2 error
	if b.Root, err2 = base64.StdEncoding.DecodeString(b.Manifest.TreeHead.Root); err2 != nil || len(b.Root) != sha256.Size {
		return nil, &BundleError{Check: "tree head", Err: errors.New("the root is not 32 bytes of base64")}
	}
	if b.Checkpoint, err = get(b.Manifest.TreeHead.Checkpoint); err != nil {
		return nil, err
	}
	if b.Token, err = get(b.Manifest.TreeHead.Timestamp); err != nil {
		return nil, err
	}
	certs, err := get(b.Manifest.Certificates)
	if err != nil {
		return nil, err
	}
	if b.Certificates, err = parseCertsPEM(certs); err != nil || len(b.Certificates) == 0 {
		return nil, &BundleError{Check: "certificates", Err: fmt.Errorf("%s: no certificate (%v)", b.Manifest.Certificates, err)}
	}
	if b.Manifest.TSACertificates != "" {
		certs, err := get(b.Manifest.TSACertificates)
		if err != nil {
			return nil, err
		}
		if b.TSACertificates, err = parseCertsPEM(certs); err != nil {
			return nil, &BundleError{Check: "certificates", Err: fmt.Errorf("%s: %w", b.Manifest.TSACertificates, err)}
		}
	}
	if len(b.Manifest.Revocation) > maxBundleRevocation {
		return nil, &BundleError{Check: "revocation", Err: fmt.Errorf("%d items of revocation data, over %d", len(b.Manifest.Revocation), maxBundleRevocation)}
	}
	for _, mr := range b.Manifest.Revocation {
		if mr.Kind != RevocationCRL && mr.Kind != RevocationOCSP {
			return nil, &BundleError{Check: "revocation", Err: fmt.Errorf("%s: kind %q, not %q or %q", mr.File, mr.Kind, RevocationCRL, RevocationOCSP)}
		}
		data, err := get(mr.File)
		if err != nil {
			return nil, err
		}
		b.Revocation = append(b.Revocation, RevocationData{Kind: mr.Kind, Data: data})
	}
	// One bundle, one encoding: re-encode what was read and compare, so
	// that no byte — ZIP headers and times, manifest layout, extra files,
	// the readable copies, which are rendered again from the binary
	// records — escapes the checks.
	again := &Bundle{
		Manifest:        Manifest{Format: b.Manifest.Format, Origin: b.Manifest.Origin, Evidence: b.Manifest.Evidence, TreeHead: ManifestHead{Size: b.Manifest.TreeHead.Size}},
		Records:         b.Records,
		RecordData:      b.RecordData,
		Inclusion:       b.Inclusion,
		Root:            b.Root,
		Checkpoint:      b.Checkpoint,
		Token:           b.Token,
		Certificates:    b.Certificates,
		TSACertificates: b.TSACertificates,
		Revocation:      b.Revocation,
	}
	for _, mr := range b.Manifest.Records {
		again.Manifest.Records = append(again.Manifest.Records, ManifestRecord{Index: mr.Index, ID: mr.ID})
	}
	canon, err := again.encode()
	if err != nil || !bytes.Equal(canon, data) {
		return nil, &BundleError{Check: "bundle", Err: errors.New("not in canonical form: the file was changed after export")}
	}
	return b, nil
}

func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %s block", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// BundleVerifyOptions are the trust anchors of a bundle verification.
type BundleVerifyOptions struct {
	Roots *x509.CertPool // roots for the log key's and the TSA's certificates; required
}

// VerifyBundle checks a bundle with no network access:
//
//  1. the bundle: a ZIP in the canonical form of Export, manifest.json
//     of BundleFormat, every record in canonical encoding;
//  2. certificates: the log key's certificate carries OIDEvidenceLog and
//     chains to opts.Roots at the time of the time-stamp;
//  3. tree head: the checkpoint (c2sp.org/tlog-checkpoint) of the
//     manifest's origin, size and root, signed by that key (signed-note
//     signature type 0x02);
//  4. timestamp: the RFC 3161 token on SHA-256 of the checkpoint, from a
//     TSA chaining to opts.Roots (package tsa's Verify);
//  5. revocation: when the bundle carries revocation data, or a
//     certificate of either chain names a CRL distribution point or an
//     OCSP responder, both certificates are validated again (package
//     certvalidation, offline, at the time of the time-stamp) with the
//     bundle's CRLs and OCSP responses: a certificate revoked before that
//     time, a certificate naming a CRL distribution point or an OCSP
//     responder whose status the data does not establish, and a CRL or
//     OCSP response that does not parse or that neither validation could
//     use all fail this check;
//  6. each record: its RFC 9162 inclusion proof in that tree head.
//
// A failure is a *BundleError naming the check, or wraps
// ErrMalformedBundle.
func VerifyBundle(data []byte, opts BundleVerifyOptions) (*Bundle, error) {
	if opts.Roots == nil {
		return nil, errors.New("proof: verify bundle: roots are required")
	}
	b, err := ReadBundle(data)
	if err != nil {
		return nil, err
	}
	var inter []*x509.Certificate
	inter = append(inter, b.Certificates[1:]...)
	inter = append(inter, b.TSACertificates...)
	pool := x509.NewCertPool()
	for _, c := range inter {
		pool.AddCert(c)
	}
	digest := sha256.Sum256(b.Checkpoint)
	tok, err := tsa.Verify(b.Token, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: opts.Roots, Intermediates: pool, Certificates: b.TSACertificates})
	if err != nil {
		return b, &BundleError{Check: "timestamp", Err: err}
	}
	logCert := b.Certificates[0]
	if !IsEvidenceLogCertificate(logCert) {
		return b, &BundleError{Check: "certificates", Err: fmt.Errorf("the certificate %q is not an evidence log's (no extended key usage %s)", logCert.Subject, OIDEvidenceLog)}
	}
	logChains, err := logCert.Verify(x509.VerifyOptions{Roots: opts.Roots, Intermediates: pool, CurrentTime: tok.GenTime, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return b, &BundleError{Check: "certificates", Err: fmt.Errorf("the log key's certificate: %w", err)}
	}
	if err := checkRevocation(b, logChains, tok, opts.Roots, pool); err != nil {
		return b, err
	}
	v, err := NewNoteVerifier(b.Manifest.Origin, logCert.PublicKey)
	if err != nil {
		return b, &BundleError{Check: "certificates", Err: err}
	}
	cp, err := OpenCheckpoint(v, b.Manifest.Origin, b.Checkpoint)
	if err != nil {
		return b, &BundleError{Check: "tree head", Err: err}
	}
	if cp.Size != b.Manifest.TreeHead.Size || !bytes.Equal(cp.Root, b.Root) {
		return b, &BundleError{Check: "tree head", Err: errors.New("the signed checkpoint is of another tree than the manifest's")}
	}
	for i, mr := range b.Manifest.Records {
		if err := VerifyInclusion(b.RecordData[i], mr.Index, cp.Size, b.Inclusion[i], cp.Root); err != nil {
			return b, &BundleError{Check: fmt.Sprintf("record %d (id %s)", mr.Index, mr.ID), Err: fmt.Errorf("inclusion proof: %w", err)}
		}
	}
	b.verified = &verification{
		token:      tok,
		checkpoint: cp,
		keyName:    v.Name(),
		keyID:      v.KeyID(),
		logChain:   logChains[0],
		tsaChain:   tsaChain(tok, opts.Roots, pool),
	}
	return b, nil
}

// verification is what VerifyBundle established: the facts [Summarize]
// shows.
type verification struct {
	token      *tsa.Token // verified; SignerCert set
	checkpoint Checkpoint // opened with the log key
	keyName    string     // the note key's name and ID
	keyID      uint32
	logChain   []*x509.Certificate // the log key's certificate up to a root of the verification
	tsaChain   []*x509.Certificate // the TSA's, likewise; nil if it was not rebuilt
}

// tsaChain rebuilds the TSA certificate's chain that tsa.Verify accepted,
// to name the root it ends at.
func tsaChain(tok *tsa.Token, roots, inter *x509.CertPool) []*x509.Certificate {
	if tok.SignerCert == nil {
		return nil
	}
	pool := inter.Clone()
	for _, c := range tok.Certificates {
		pool.AddCert(c)
	}
	chains, err := tok.SignerCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: tok.GenTime, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}})
	if err != nil || len(chains) == 0 {
		return []*x509.Certificate{tok.SignerCert}
	}
	return chains[0]
}
