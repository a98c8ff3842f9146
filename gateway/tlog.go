package gateway

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"pec/gateway/api"
	"pec/proof"
)

// The published log: what monitors and witnesses read, on the tsa
// listener, with no client certificate. Hashes and signed checkpoints
// only, never records (they name who exchanged with whom).
//
//	GET /checkpoint                       the newest checkpoint, a signed note (c2sp.org/tlog-checkpoint)
//	GET /checkpoints/{size}               the checkpoint of a sealed tree head of that size
//	GET /checkpoints/{size}.tst           its RFC 3161 TimeStampToken (DER) on SHA-256 of the note
//	GET /tile/<L>/<N>[.p/<W>]             hash tiles (c2sp.org/tlog-tiles); tile/entries/... is 404
//	GET /proof/consistency?old=A&new=B    the RFC 9162 section 2.1.4 consistency proof, JSON
//	GET /log-certificates                 the certificates of the log's checkpoint keys, PEM
//
// A monitor reads /checkpoint, then the token of that checkpoint's size:
// both name one sealed head, so a head sealed in between does not mix two
// (the token is checked against the note's own digest anyway). Nothing
// beyond the newest sealed head is served: the store may hold records
// not yet sealed.

// tlogPublisher serves the published log from the node's evidence log.
type tlogPublisher struct {
	log   *proof.Log
	certs *proof.LogCerts // nil: none published
}

func registerTlog(mux *http.ServeMux, m *metrics, e *edge, log *proof.Log, certs *proof.LogCerts) {
	if log == nil {
		return
	}
	p := &tlogPublisher{log: log, certs: certs}
	op := operation{name: "tlog"}
	mux.Handle("GET /checkpoint", m.instrument("/checkpoint", e.handle(op, p.checkpoint)))
	mux.Handle("GET /checkpoints/{name}", m.instrument("/checkpoints/{size}", e.handle(op, p.checkpointAt)))
	mux.Handle("GET /tile/", m.instrument("/tile/", e.handle(op, p.tile)))
	mux.Handle("GET /proof/consistency", m.instrument("/proof/consistency", e.handle(op, p.consistency)))
	mux.Handle("GET /log-certificates", m.instrument("/log-certificates", e.handle(op, p.logCertificates)))
}

// logCertificates serves the certificates of the log's checkpoint keys,
// the current key's first, then those of the keys rotated out, each
// followed by its chain (every certificate once): a monitor that meets a
// checkpoint signed by a key it does not know finds the key's
// certificate here, and trusts it only if it chains to its own roots.
func (p *tlogPublisher) logCertificates(w http.ResponseWriter, r *http.Request) error {
	var chains [][]*x509.Certificate
	if p.certs != nil {
		chains = p.certs.Chains()
	}
	if len(chains) == 0 {
		return refuse(api.TypeNotFound, "this node publishes no log certificates")
	}
	var out []byte
	seen := map[string]bool{}
	for _, chain := range chains {
		for _, c := range chain {
			if !seen[string(c.Raw)] {
				seen[string(c.Raw)] = true
				out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
			}
		}
	}
	publicHeaders(w, "application/pem-certificate-chain", cacheMutable)
	_, _ = w.Write(out)
	return nil
}

// Cache lifetimes: the newest checkpoint changes at every seal (at most
// proof.seal_interval apart), tlog-tiles wants it cached a few seconds
// at most; tiles and the checkpoint of a given size never change.
const (
	cacheMutable   = "no-cache"
	cacheImmutable = "public, max-age=31536000, immutable"
)

func publicHeaders(w http.ResponseWriter, contentType, cache string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cache)
	h.Set("X-Content-Type-Options", "nosniff")
	// Public, static data: browser-based monitors may read it too.
	h.Set("Access-Control-Allow-Origin", "*")
}

// latest is the newest sealed head; an empty log is not-found.
func (p *tlogPublisher) latest() (*proof.Head, error) {
	h := p.log.Latest()
	if h == nil {
		return nil, refuse(api.TypeNotFound, "the evidence log is empty: no checkpoint yet")
	}
	return h, nil
}

func (p *tlogPublisher) checkpoint(w http.ResponseWriter, r *http.Request) error {
	h, err := p.latest()
	if err != nil {
		return err
	}
	publicHeaders(w, "text/plain; charset=utf-8", cacheMutable)
	_, _ = w.Write(h.Checkpoint)
	return nil
}

func (p *tlogPublisher) checkpointAt(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	digits, token := strings.CutSuffix(name, ".tst")
	size, ok := parseSize(digits)
	if !ok {
		return refuse(api.TypeMalformedRequest, "not a tree size: /checkpoints/{size} or /checkpoints/{size}.tst, size in decimal")
	}
	latest, err := p.latest()
	if err != nil {
		return err
	}
	var head *proof.Head
	if size == latest.Size {
		head = latest
	} else if size < latest.Size {
		var err error
		head, err = p.log.Store().HeadAt(r.Context(), size)
		if err != nil && !errors.Is(err, proof.ErrNotFound) {
			return fmt.Errorf("read tree head %d: %w", size, err)
		}
	}
	if head == nil {
		return refuse(api.TypeNotFound, "no checkpoint of size "+digits+": checkpoints are made per sealed batch, up to the newest, "+strconv.FormatUint(latest.Size, 10))
	}
	if token {
		publicHeaders(w, "application/octet-stream", cacheImmutable)
		_, _ = w.Write(head.Token)
		return nil
	}
	publicHeaders(w, "text/plain; charset=utf-8", cacheImmutable)
	_, _ = w.Write(head.Checkpoint)
	return nil
}

func (p *tlogPublisher) tile(w http.ResponseWriter, r *http.Request) error {
	t, err := proof.ParseTilePath(strings.TrimPrefix(r.URL.Path, "/"))
	if errors.Is(err, proof.ErrEntryBundle) {
		return refuse(api.TypeNotFound, "entry bundles are not published: the records name who exchanged with whom; only hash tiles are")
	}
	if err != nil {
		return refuse(api.TypeMalformedRequest, "not a hash tile path of c2sp.org/tlog-tiles: /tile/<L>/<N>[.p/<W>]")
	}
	latest, err := p.latest()
	if err != nil {
		return err
	}
	if !t.In(latest.Size) {
		return refuse(api.TypeNotFound, "no tile "+t.Path()+" in the tree of the newest checkpoint, size "+strconv.FormatUint(latest.Size, 10))
	}
	data, err := proof.ReadTile(r.Context(), p.log.Store(), t, latest.Size)
	if err != nil {
		// The tree holds it: the store is at fault, not the client.
		return fmt.Errorf("read tile %s: %w", t.Path(), err)
	}
	publicHeaders(w, "application/octet-stream", cacheImmutable)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
	return nil
}

// consistency answers GET /proof/consistency with an api.ConsistencyProof.
func (p *tlogPublisher) consistency(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if len(q) != 2 || len(q["old"]) != 1 || len(q["new"]) != 1 {
		return refuse(api.TypeMalformedRequest, "use ?old=SIZE&new=SIZE, once each")
	}
	oldSize, ok1 := parseSize(q.Get("old"))
	newSize, ok2 := parseSize(q.Get("new"))
	if !ok1 || !ok2 {
		return refuse(api.TypeMalformedRequest, "old and new are tree sizes, in decimal")
	}
	if oldSize > newSize {
		return refuse(api.TypeMalformedRequest, "old is larger than new")
	}
	latest, err := p.latest()
	if err != nil {
		return err
	}
	if newSize > latest.Size {
		return refuse(api.TypeNotFound, "no tree of size "+strconv.FormatUint(newSize, 10)+": the newest checkpoint is of size "+strconv.FormatUint(latest.Size, 10))
	}
	hashes, err := proof.ConsistencyProof(r.Context(), p.log.Store(), oldSize, newSize)
	if err != nil {
		return fmt.Errorf("consistency proof %d..%d: %w", oldSize, newSize, err)
	}
	body := api.ConsistencyProof{Old: oldSize, New: newSize, Proof: make([]string, len(hashes))}
	for i, h := range hashes {
		body.Proof[i] = base64.StdEncoding.EncodeToString(h)
	}
	publicHeaders(w, "application/json", cacheImmutable)
	writeJSON(w, http.StatusOK, body)
	return nil
}

// parseSize reads a tree size: decimal, no sign, no leading zero.
func parseSize(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
