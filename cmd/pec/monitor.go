package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"

	"pec/gateway/api"
	"pec/internal/atomicfile"
	"pec/internal/devpki"
	"pec/proof"
	"pec/tsa"
)

// pec proof monitor: an auditor's watcher of a node's published evidence
// log. Each run fetches the newest checkpoint and its time-stamp token,
// verifies both, and checks that the log extends the checkpoint the
// previous run verified (kept in the state file): a smaller tree is a
// rollback; another root at the same size, or a tree that does not extend
// the old one, is a fork. Either means the node rewrote its history.

// monitorStateFormat names version 1 of the state file.
const monitorStateFormat = "pec-monitor-state/1"

// Bounds on what the monitor reads.
const (
	maxMonitorNote  = 64 << 10
	maxMonitorToken = 64 << 10
	maxMonitorProof = 64 << 10
	maxMonitorState = 1 << 20
)

// monitorState is the state file: the last checkpoint verified, as the
// node served it, so that the auditor keeps the signed evidence. The note
// is what counts; Size and Root repeat it for people and must agree.
type monitorState struct {
	Format     string    `json:"format"`
	URL        string    `json:"url"`
	Origin     string    `json:"origin"`
	Size       uint64    `json:"size"`
	Root       string    `json:"root"`       // base64
	Checkpoint string    `json:"checkpoint"` // the signed note
	Token      string    `json:"token"`      // base64 of the DER TimeStampToken on SHA-256 of the note
	Time       time.Time `json:"time"`       // the token's time
	Checked    time.Time `json:"checked"`    // when the monitor verified it
	// Certificates is the certificate (then its chain, PEM) of the log
	// key that signed Checkpoint, when it is not --log-cert's: a key the
	// log rotated to, found at /log-certificates and trusted because it
	// chains to --roots.
	Certificates string `json:"certificates,omitempty"`
}

// monitorHead is one verified checkpoint.
type monitorHead struct {
	Size uint64    `json:"size"`
	Root string    `json:"root"`
	Time time.Time `json:"time,omitzero"`
}

// monitorReport is what --json prints, whatever the outcome.
type monitorReport struct {
	// Status: first_use, unchanged, consistent (exit 0); rollback, fork,
	// invalid, unavailable (exit 1).
	Status   string       `json:"status"`
	URL      string       `json:"url"`
	Origin   string       `json:"origin,omitempty"`
	Head     *monitorHead `json:"head,omitempty"`     // the checkpoint fetched, once its signature verified
	Previous *monitorHead `json:"previous,omitempty"` // the one of the state file
	Via      string       `json:"via,omitempty"`      // how consistency was checked: "proof" or "tiles"
	Key      string       `json:"key,omitempty"`      // the note key ID (hex) of the log key that signed the checkpoint
	// NewKey is the certificate of that key when it is not the key of the
	// previous checkpoint (the log rotated its key) or of --log-cert.
	NewKey   *monitorKey `json:"new_key,omitempty"`
	Problem  string      `json:"problem,omitempty"`
	Conflict string      `json:"conflict,omitempty"` // the file keeping the offending checkpoint
}

// monitorKey names a log key's certificate.
type monitorKey struct {
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"`
}

// maxMonitorCerts bounds GET /log-certificates.
const maxMonitorCerts = 256 << 10

type monitorOptions struct {
	url, state, logCert, roots, origin string
	asJSON, tiles                      bool
	timeout                            time.Duration
}

func newProofMonitorCommand() *cobra.Command {
	var o monitorOptions
	cmd := &cobra.Command{
		Use:   "monitor --url URL --state FILE --log-cert PROOF.pem --roots ROOT.pem [--origin NAME] [--tiles] [--json]",
		Short: "Watch a node's published evidence log: exit 1 on a rollback or a fork",
		Long: `monitor fetches the newest checkpoint of the log published at URL (GET /checkpoint on
the tsa listener) and its RFC 3161 token, verifies the checkpoint's signature with the key
of PROOF.pem (which must chain to ROOT.pem and carry the evidence-log extended key usage)
and the token (on SHA-256 of the checkpoint, from a TSA chaining to ROOT.pem), then checks
that the log extends the checkpoint FILE holds from the previous run: with the node's
consistency proof (GET /proof/consistency), or with --tiles from the hash tiles alone
(c2sp.org/tlog-tiles), both checked here against the two roots. On success FILE gets the
new checkpoint. With no FILE yet, the checkpoint is trusted on first use.

Exit status: 0 the log extends what was seen (or first use); 1 a rollback (a smaller
tree), a fork (another root at the same size, or a tree that does not extend the old
one), a bad signature or token, or a node that does not answer — FILE is left as it was
and the offending checkpoint is kept in FILE.conflict; 2 usage error, unreadable
certificates or state file.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMonitor(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.url, "url", "", "the node's tsa listener (http://HOST:PORT), under which /checkpoint is published")
	f.StringVar(&o.state, "state", "", "the state file: the last checkpoint verified")
	f.StringVar(&o.logCert, "log-cert", "", "the log key's certificate, then its chain (PEM)")
	f.StringVar(&o.roots, "roots", "", "trusted root certificates (PEM)")
	f.StringVar(&o.origin, "origin", "", "the log's origin (default: the state file's, or on first use the checkpoint's)")
	f.BoolVar(&o.tiles, "tiles", false, "check consistency from the hash tiles instead of the node's consistency proof")
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on each request to the node")
	return cmd
}

// monitorFailure is an outcome of exit 1, with its report status.
type monitorFailure struct {
	status string
	err    error
}

func (e *monitorFailure) Error() string { return e.status + ": " + e.err.Error() }
func (e *monitorFailure) Unwrap() error { return e.err }

func monitorFail(status, format string, args ...any) error {
	return &monitorFailure{status: status, err: fmt.Errorf(format, args...)}
}

func runMonitor(ctx context.Context, o monitorOptions, out io.Writer) error {
	for _, req := range []struct{ name, val string }{{"--url URL", o.url}, {"--state FILE", o.state}, {"--log-cert PROOF.pem", o.logCert}, {"--roots ROOT.pem", o.roots}} {
		if req.val == "" {
			return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("%s is required", req.name)}}
		}
	}
	base, err := url.Parse(strings.TrimRight(o.url, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return usageError("--url %q: an http:// or https:// URL of the node's tsa listener", o.url)
	}
	if o.timeout <= 0 {
		return usageError("--timeout %s: must be positive", o.timeout)
	}
	logChain, err := devpki.LoadCertsPEM(o.logCert)
	if err != nil || len(logChain) == 0 {
		return inputError(fmt.Errorf("--log-cert: no certificate (%v)", err))
	}
	if !proof.IsEvidenceLogCertificate(logChain[0]) {
		return inputError(fmt.Errorf("--log-cert: %q is not an evidence log's certificate (no extended key usage %s)", logChain[0].Subject, proof.OIDEvidenceLog))
	}
	rootCerts, err := devpki.LoadCertsPEM(o.roots)
	if err != nil || len(rootCerts) == 0 {
		return inputError(fmt.Errorf("--roots: no certificate (%v)", err))
	}
	roots := x509.NewCertPool()
	for _, c := range rootCerts {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range logChain[1:] {
		inter.AddCert(c)
	}

	m := &monitor{o: o, base: base.String(), logChain: logChain, roots: roots, inter: inter}
	m.report.URL = m.base
	if m.client, err = api.NewClient(m.base, &http.Client{Timeout: o.timeout, Transport: tlsTransport(rootCerts)}); err != nil {
		return usageError("--url %q: %v", o.url, err)
	}
	err = m.run(ctx)
	f, failed := errors.AsType[*monitorFailure](err)
	if o.asJSON && (err == nil || failed) {
		if failed {
			m.report.Status, m.report.Problem = f.status, oneLine(f.err.Error())
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(m.report)
	}
	if failed {
		msg := f.Error()
		if m.report.Conflict != "" {
			msg += " (the checkpoint served is kept in " + m.report.Conflict + ")"
		}
		return failure(errors.New(oneLine(msg)))
	}
	if err != nil {
		return err
	}
	if !o.asJSON {
		h := m.report.Head
		switch m.report.Status {
		case "first_use":
			fmt.Fprintf(out, "first use: trusting checkpoint %d of %s, root %s, time-stamped %s (no state in %s yet)\n", h.Size, m.report.Origin, h.Root, stamp(h.Time), o.state)
		case "unchanged":
			fmt.Fprintf(out, "ok: checkpoint %d of %s, root %s, time-stamped %s: unchanged\n", h.Size, m.report.Origin, h.Root, stamp(h.Time))
		default:
			fmt.Fprintf(out, "ok: checkpoint %d of %s, root %s, time-stamped %s, extends checkpoint %d (checked with the %s)\n",
				h.Size, m.report.Origin, h.Root, stamp(h.Time), m.report.Previous.Size, map[string]string{"proof": "node's consistency proof", "tiles": "hash tiles"}[m.report.Via])
		}
		if k := m.report.NewKey; k != nil {
			fmt.Fprintf(out, "  signed by a new log key: key ID %s, certificate %q (sha256 %s), which chains to --roots\n", m.report.Key, k.Subject, k.SHA256)
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// tlsTransport trusts the system roots and --roots, for a tsa listener
// with TLS (tls.tsa_tls).
func tlsTransport(roots []*x509.Certificate) *http.Transport {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, c := range roots {
		pool.AddCert(c)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t
}

type monitor struct {
	o        monitorOptions
	base     string
	client   *api.Client // of the published log: no client certificate
	logChain []*x509.Certificate
	roots    *x509.CertPool
	inter    *x509.CertPool
	report   monitorReport
}

// verified is a checkpoint whose signature and token verified.
type verified struct {
	cp    proof.Checkpoint
	note  []byte
	token []byte
	time  time.Time
	chain []*x509.Certificate // of the log key that signed it
}

func (v *verified) head() *monitorHead {
	return &monitorHead{Size: v.cp.Size, Root: base64.StdEncoding.EncodeToString(v.cp.Root), Time: v.time.UTC()}
}

func (m *monitor) run(ctx context.Context) error {
	prev, err := m.loadState()
	if err != nil {
		return err
	}
	origin := m.o.origin
	if prev != nil {
		if origin != "" && origin != prev.cp.Origin {
			return usageError("--origin %q: the state file %s watches %q", origin, m.o.state, prev.cp.Origin)
		}
		origin = prev.cp.Origin
		m.report.Previous = prev.head()
	}

	note, err := m.fetch("/checkpoint", maxMonitorNote, func(limit int64) ([]byte, error) { return m.client.Checkpoint(ctx, limit) })
	if err != nil {
		return err
	}
	if origin == "" {
		// First use without --origin: the checkpoint names its log, and
		// the signature must be of the log certificate's key under that
		// name; the state file pins it from now on.
		first, _, _ := bytes.Cut(note, []byte("\n"))
		origin = string(first)
	}
	m.report.Origin = origin
	chain, err := m.keyChain(ctx, origin, note, prev)
	if err != nil {
		return err
	}
	v, err := proof.NewNoteVerifier(origin, chain[0].PublicKey)
	if err != nil {
		return monitorFail("invalid", "the checkpoint: %w", err)
	}
	cp, err := proof.OpenCheckpoint(v, origin, note)
	if err != nil {
		return monitorFail("invalid", "the checkpoint served at %s/checkpoint: %w", m.base, err)
	}
	cur := &verified{cp: cp, note: note, chain: chain}
	m.report.Key = fmt.Sprintf("%08x", v.KeyID())
	known := m.logChain[0]
	if prev != nil {
		known = prev.chain[0]
	}
	if !chain[0].Equal(known) {
		m.report.NewKey = &monitorKey{Subject: chain[0].Subject.String(), SHA256: certSHA256(chain[0])}
	}
	m.report.Head = cur.head()
	if cur.token, err = m.fetch("/checkpoints/"+strconv.FormatUint(cp.Size, 10)+".tst", maxMonitorToken, func(limit int64) ([]byte, error) {
		return m.client.CheckpointToken(ctx, cp.Size, limit)
	}); err != nil {
		return err
	}
	if err := m.checkToken(cur); err != nil {
		return err
	}
	m.report.Head = cur.head()

	switch {
	case prev == nil:
		if m.o.tiles {
			if err := m.checkTiles(ctx, cur, nil); err != nil {
				return err
			}
		}
		m.report.Status = "first_use"
	case cur.cp.Size < prev.cp.Size:
		m.keepConflict(cur)
		return monitorFail("rollback", "the log's checkpoint is of size %d, smaller than the checkpoint %d (root %s) it published at %s",
			cur.cp.Size, prev.cp.Size, m.report.Previous.Root, stamp(prev.time))
	case cur.cp.Size == prev.cp.Size:
		if !bytes.Equal(cur.cp.Root, prev.cp.Root) {
			m.keepConflict(cur)
			return monitorFail("fork", "the log signed two checkpoints of size %d: root %s now, root %s at %s",
				cur.cp.Size, m.report.Head.Root, m.report.Previous.Root, stamp(prev.time))
		}
		if m.o.tiles {
			if err := m.checkTiles(ctx, cur, nil); err != nil {
				return err
			}
		}
		m.report.Status = "unchanged"
	default:
		if m.o.tiles {
			err = m.checkTiles(ctx, cur, prev)
		} else {
			err = m.checkProof(ctx, cur, prev)
		}
		if err != nil {
			return err
		}
		m.report.Status = "consistent"
	}
	return m.saveState(cur)
}

// checkToken verifies the token as the bundle verifier does: on SHA-256
// of the note, from a TSA chaining to the roots; and the log key's
// certificate at the token's time.
func (m *monitor) checkToken(cur *verified) error {
	digest := sha256.Sum256(cur.note)
	inter := m.inter.Clone()
	for _, c := range cur.chain[1:] {
		inter.AddCert(c)
	}
	tok, err := tsa.Verify(cur.token, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: m.roots, Intermediates: inter, Certificates: cur.chain[1:]})
	if err != nil {
		return monitorFail("invalid", "the time-stamp token of checkpoint %d: %w", cur.cp.Size, err)
	}
	cur.time = tok.GenTime
	if _, err := cur.chain[0].Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inter, CurrentTime: tok.GenTime, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return monitorFail("invalid", "the log key's certificate at the time of checkpoint %d (%s): %w", cur.cp.Size, stamp(tok.GenTime), err)
	}
	return nil
}

// checkProof checks the node's consistency proof between the two
// checkpoints against their verified roots.
func (m *monitor) checkProof(ctx context.Context, cur, prev *verified) error {
	m.report.Via = "proof"
	body, err := m.fetch(fmt.Sprintf("/proof/consistency?old=%d&new=%d", prev.cp.Size, cur.cp.Size), maxMonitorProof, func(limit int64) ([]byte, error) {
		return m.client.ConsistencyProof(ctx, prev.cp.Size, cur.cp.Size, limit)
	})
	if err != nil {
		return err
	}
	hashes, err := parseConsistencyProof(body, prev.cp.Size, cur.cp.Size)
	if err != nil {
		return monitorFail("invalid", "the consistency proof %d→%d: %w", prev.cp.Size, cur.cp.Size, err)
	}
	if err := proof.VerifyConsistency(prev.cp.Size, cur.cp.Size, hashes, prev.cp.Root, cur.cp.Root); err != nil {
		m.keepConflict(cur)
		return monitorFail("fork", "checkpoint %d (root %s) does not extend checkpoint %d (root %s) published at %s: the node's consistency proof does not verify against the two roots",
			cur.cp.Size, m.report.Head.Root, prev.cp.Size, m.report.Previous.Root, stamp(prev.time))
	}
	return nil
}

// parseConsistencyProof reads the body of GET /proof/consistency, which
// must be the proof between the sizes asked for: at most 128 hashes (a
// proof has fewer than 2 per level of a 64-bit tree), each 32 bytes.
func parseConsistencyProof(body []byte, oldSize, newSize uint64) ([][]byte, error) {
	var cp api.ConsistencyProof
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cp); err != nil {
		return nil, fmt.Errorf("not a proof: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not a proof: data after the JSON object")
	}
	if cp.Old != oldSize || cp.New != newSize || cp.Proof == nil {
		return nil, errors.New("not a proof of these sizes")
	}
	if len(cp.Proof) > 128 {
		return nil, fmt.Errorf("%d hashes", len(cp.Proof))
	}
	hashes := make([][]byte, len(cp.Proof))
	for i, s := range cp.Proof {
		h, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("hash %d is not 32 bytes of base64", i)
		}
		hashes[i] = h
	}
	return hashes, nil
}

// checkTiles reads the hash tiles of the new tree with golang.org/x/mod's
// tlog client, which authenticates every tile against the new root; with
// prev, it proves and checks consistency from the tiles alone.
func (m *monitor) checkTiles(ctx context.Context, cur, prev *verified) error {
	m.report.Via = "tiles"
	if cur.cp.Size > math.MaxInt64 {
		return monitorFail("invalid", "checkpoint size %d: too large for the tile client", cur.cp.Size)
	}
	tr := &tileFetcher{ctx: ctx, m: m}
	tree := tlog.Tree{N: int64(cur.cp.Size), Hash: tlog.Hash(cur.cp.Root)}
	hr := tlog.TileHashReader(tree, tr)
	fetchErr := func(err error) error {
		if tr.err != nil {
			return tr.err // the node did not answer: not a finding about the log
		}
		return monitorFail("invalid", "the hash tiles do not give the root of checkpoint %d: %v", cur.cp.Size, err)
	}
	if prev == nil {
		root, err := tlog.TreeHash(tree.N, hr)
		if err != nil {
			return fetchErr(err)
		}
		if !bytes.Equal(root[:], cur.cp.Root) {
			return monitorFail("invalid", "the hash tiles give root %s, not that of checkpoint %d", base64.StdEncoding.EncodeToString(root[:]), cur.cp.Size)
		}
		return nil
	}
	p, err := tlog.ProveTree(tree.N, int64(prev.cp.Size), hr)
	if err != nil {
		return fetchErr(err)
	}
	if err := tlog.CheckTree(p, tree.N, tree.Hash, int64(prev.cp.Size), tlog.Hash(prev.cp.Root)); err != nil {
		m.keepConflict(cur)
		return monitorFail("fork", "checkpoint %d (root %s) does not extend checkpoint %d (root %s) published at %s: the consistency proof from its hash tiles does not verify against the two roots",
			cur.cp.Size, m.report.Head.Root, prev.cp.Size, m.report.Previous.Root, stamp(prev.time))
	}
	return nil
}

// tileFetcher reads tiles under /tile/ for x/mod's client.
type tileFetcher struct {
	ctx context.Context
	m   *monitor
	err error // the first failure to fetch
}

func (f *tileFetcher) Height() int { return proof.TileHeight }

func (f *tileFetcher) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if t.L < 0 {
			return nil, errors.New("entry bundles are not published")
		}
		path := proof.Tile{Level: t.L, N: uint64(t.N), Width: t.W}.Path()
		data, err := f.m.fetch("/"+path, proof.TileWidth*sha256.Size, func(limit int64) ([]byte, error) { return f.m.client.Tile(f.ctx, path, limit) })
		if err != nil {
			f.err = err
			return nil, err
		}
		if len(data) != t.W*sha256.Size {
			return nil, fmt.Errorf("/%s: %d bytes, not %d", path, len(data), t.W*sha256.Size)
		}
		out[i] = data
	}
	return out, nil
}

func (f *tileFetcher) SaveTiles([]tlog.Tile, [][]byte) {}

// fetch GETs path of the published log through the API client (get),
// reading at most limit bytes. A node that does not answer as it should
// is "unavailable"; an answer over the limit is "invalid".
func (m *monitor) fetch(path string, limit int64, get func(limit int64) ([]byte, error)) ([]byte, error) {
	body, err := get(limit)
	switch {
	case errors.Is(err, api.ErrTooLarge):
		return nil, monitorFail("invalid", "GET %s: over %d bytes", path, limit)
	case err != nil:
		if _, ok := errors.AsType[*api.Error](err); ok {
			return nil, monitorFail("unavailable", "GET %s: %w", path, err)
		}
		return nil, monitorFail("unavailable", "%w", err)
	}
	return body, nil
}

// loadState reads and re-verifies the state file; nil when there is none.
// A state file that cannot be read, or whose checkpoint is not signed by
// the log key, is an input error (exit 2): the monitor cannot tell what
// it saw.
func (m *monitor) loadState() (*verified, error) {
	f, err := os.Open(m.o.state)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, inputError(fmt.Errorf("--state: %w", err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMonitorState+1))
	if err != nil {
		return nil, inputError(fmt.Errorf("--state: %w", err))
	}
	chain, err := m.stateChain(data)
	if err != nil {
		return nil, inputError(fmt.Errorf("--state %s: %w", m.o.state, err))
	}
	v, err := parseMonitorState(data, chain[0].PublicKey)
	if err != nil {
		return nil, inputError(fmt.Errorf("--state %s: %w", m.o.state, err))
	}
	v.chain = chain
	return v, nil
}

// stateChain is the certificate chain of the key that signed the state
// file's checkpoint: the one the file keeps, if it still chains to
// --roots, else --log-cert's.
func (m *monitor) stateChain(data []byte) ([]*x509.Certificate, error) {
	var st struct {
		Certificates string    `json:"certificates"`
		Time         time.Time `json:"time"`
	}
	if len(data) > maxMonitorState || json.Unmarshal(data, &st) != nil || st.Certificates == "" {
		return m.logChain, nil // parseMonitorState says what is wrong
	}
	chain, err := devpki.ParseCertsPEM([]byte(st.Certificates))
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("its log key certificate: %v", err)
	}
	if err := m.trustLogCert(chain, st.Time); err != nil {
		return nil, fmt.Errorf("its log key certificate: %w", err)
	}
	return chain, nil
}

// trustLogCert checks that chain[0] is an evidence log's certificate that
// chains to --roots at time at.
func (m *monitor) trustLogCert(chain []*x509.Certificate, at time.Time) error {
	if !proof.IsEvidenceLogCertificate(chain[0]) {
		return fmt.Errorf("%q is not an evidence log's certificate (no extended key usage %s)", chain[0].Subject, proof.OIDEvidenceLog)
	}
	inter := m.inter.Clone()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%q does not chain to --roots: %v", chain[0].Subject, err)
	}
	return nil
}

// keyChain is the certificate chain of the log key that signed note: the
// previous checkpoint's key or --log-cert's when the note names it;
// otherwise (the log rotated its key) the certificate the node publishes
// at /log-certificates for the key the note names — trusted only once the
// token's time is known, by checkToken, if it chains to --roots.
func (m *monitor) keyChain(ctx context.Context, origin string, note []byte, prev *verified) ([]*x509.Certificate, error) {
	ids := proof.NoteKeyIDs(note, origin)
	known := [][]*x509.Certificate{m.logChain}
	if prev != nil {
		known = append([][]*x509.Certificate{prev.chain}, known...)
	}
	for _, chain := range known {
		if v, err := proof.NewNoteVerifier(origin, chain[0].PublicKey); err == nil && slices.Contains(ids, v.KeyID()) {
			return chain, nil
		}
	}
	if len(ids) == 0 {
		return nil, monitorFail("invalid", "the checkpoint served at %s/checkpoint has no signature of %s", m.base, origin)
	}
	data, err := m.fetch("/log-certificates", maxMonitorCerts, func(limit int64) ([]byte, error) { return m.client.LogCertificates(ctx, limit) })
	if err != nil {
		if f, ok := errors.AsType[*monitorFailure](err); ok && f.status == "unavailable" {
			return nil, monitorFail("invalid", "the checkpoint is signed by log key %08x, not by the key of --log-cert, and the node gives no certificate for it: %v", ids[0], f.err)
		}
		return nil, err
	}
	chain, err := findLogCert(data, origin, ids)
	if err != nil {
		return nil, monitorFail("invalid", "the checkpoint is signed by log key %08x, not by the key of --log-cert: %s/log-certificates: %v", ids[0], m.base, err)
	}
	return chain, nil
}

// findLogCert reads the PEM certificates of GET /log-certificates and
// returns the evidence log certificate of a key of origin among ids,
// followed by the other certificates (candidate intermediates).
func findLogCert(data []byte, origin string, ids []uint32) ([]*x509.Certificate, error) {
	if len(data) > maxMonitorCerts {
		return nil, fmt.Errorf("over %d bytes", maxMonitorCerts)
	}
	certs, err := devpki.ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) > 64 {
		return nil, fmt.Errorf("%d certificates", len(certs))
	}
	for i, c := range certs {
		if !proof.IsEvidenceLogCertificate(c) {
			continue
		}
		v, err := proof.NewNoteVerifier(origin, c.PublicKey)
		if err != nil || !slices.Contains(ids, v.KeyID()) {
			continue
		}
		return append([]*x509.Certificate{c}, slices.Delete(slices.Clone(certs), i, i+1)...), nil
	}
	return nil, fmt.Errorf("no evidence log certificate of key %08x", ids)
}

// parseMonitorState reads a state file whose checkpoint must be signed by
// the log key pub.
func parseMonitorState(data []byte, pub crypto.PublicKey) (*verified, error) {
	if len(data) > maxMonitorState {
		return nil, fmt.Errorf("over %d bytes", maxMonitorState)
	}
	var st monitorState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("not a state file: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not a state file: data after the JSON object")
	}
	if st.Format != monitorStateFormat {
		return nil, fmt.Errorf("format %q, not %q", st.Format, monitorStateFormat)
	}
	v, err := proof.NewNoteVerifier(st.Origin, pub)
	if err != nil {
		return nil, err
	}
	note := []byte(st.Checkpoint)
	cp, err := proof.OpenCheckpoint(v, st.Origin, note)
	if err != nil {
		return nil, fmt.Errorf("its checkpoint does not verify with the key of --log-cert: %v", err)
	}
	if cp.Size != st.Size || base64.StdEncoding.EncodeToString(cp.Root) != st.Root {
		return nil, errors.New("size and root do not match its checkpoint")
	}
	token, err := base64.StdEncoding.DecodeString(st.Token)
	if err != nil {
		return nil, fmt.Errorf("token: %v", err)
	}
	return &verified{cp: cp, note: note, token: token, time: st.Time}, nil
}

func (m *monitor) stateOf(v *verified) monitorState {
	st := monitorState{
		Format:     monitorStateFormat,
		URL:        m.base,
		Origin:     v.cp.Origin,
		Size:       v.cp.Size,
		Root:       base64.StdEncoding.EncodeToString(v.cp.Root),
		Checkpoint: string(v.note),
		Token:      base64.StdEncoding.EncodeToString(v.token),
		Time:       v.time.UTC(),
		Checked:    time.Now().UTC(),
	}
	if len(v.chain) > 0 && !v.chain[0].Equal(m.logChain[0]) {
		st.Certificates = string(devpki.CertPEM(v.chain...))
	}
	return st
}

func (m *monitor) saveState(v *verified) error {
	if err := writeJSONAtomic(m.o.state, m.stateOf(v)); err != nil {
		return failure(fmt.Errorf("--state: %w", err))
	}
	return nil
}

// keepConflict saves a validly signed checkpoint that contradicts the
// state, next to it: with the state's own, it is the evidence that the
// node rewrote its log.
func (m *monitor) keepConflict(v *verified) {
	name := m.o.state + ".conflict"
	if err := writeJSONAtomic(name, m.stateOf(v)); err == nil {
		m.report.Conflict = name
	}
}

// writeJSONAtomic replaces file with v as JSON (atomicfile.WriteFile): a
// crash leaves the old content or the new, never a mix.
func writeJSONAtomic(file string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return atomicfile.WriteFile(file, data, 0o644)
}
