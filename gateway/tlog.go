package gateway

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

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
//
// A monitor reads /checkpoint, then the token of that checkpoint's size:
// both name one sealed head, so a head sealed in between does not mix two
// (the token is checked against the note's own digest anyway). Nothing
// beyond the newest sealed head is served: the store may hold records
// not yet sealed.

// tlogPublisher serves the published log from the node's evidence log.
type tlogPublisher struct {
	log  *proof.Log
	opts Options
}

func registerTlog(mux *http.ServeMux, m *metrics, opts Options) {
	if opts.Proofs == nil || opts.Proofs.Log == nil {
		return
	}
	p := &tlogPublisher{log: opts.Proofs.Log, opts: opts}
	mux.Handle("GET /checkpoint", m.instrument("/checkpoint", http.HandlerFunc(p.checkpoint)))
	mux.Handle("GET /checkpoints/{name}", m.instrument("/checkpoints/{size}", http.HandlerFunc(p.checkpointAt)))
	mux.Handle("GET /tile/", m.instrument("/tile/", http.HandlerFunc(p.tile)))
	mux.Handle("GET /proof/consistency", m.instrument("/proof/consistency", http.HandlerFunc(p.consistency)))
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

// latest is the newest sealed head, or nil after answering 404 for an
// empty log.
func (p *tlogPublisher) latest(w http.ResponseWriter) *proof.Head {
	h := p.log.Latest()
	if h == nil {
		writeProblem(w, http.StatusNotFound, "the evidence log is empty: no checkpoint yet")
	}
	return h
}

func (p *tlogPublisher) checkpoint(w http.ResponseWriter, r *http.Request) {
	h := p.latest(w)
	if h == nil {
		return
	}
	publicHeaders(w, "text/plain; charset=utf-8", cacheMutable)
	_, _ = w.Write(h.Checkpoint)
}

func (p *tlogPublisher) checkpointAt(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	digits, token := strings.CutSuffix(name, ".tst")
	size, ok := parseSize(digits)
	if !ok {
		writeProblem(w, http.StatusBadRequest, "not a tree size: /checkpoints/{size} or /checkpoints/{size}.tst, size in decimal")
		return
	}
	latest := p.latest(w)
	if latest == nil {
		return
	}
	var head *proof.Head
	if size == latest.Size {
		head = latest
	} else if size < latest.Size {
		var err error
		head, err = p.log.Store().HeadAt(r.Context(), size)
		if err != nil && !errors.Is(err, proof.ErrNotFound) {
			p.opts.logger().ErrorContext(r.Context(), "tlog: read tree head", "size", size, "err", err)
			writeProblem(w, http.StatusInternalServerError, "the evidence log is not available")
			return
		}
	}
	if head == nil {
		writeProblem(w, http.StatusNotFound, "no checkpoint of size "+digits+": checkpoints are made per sealed batch, up to the newest, "+strconv.FormatUint(latest.Size, 10))
		return
	}
	if token {
		publicHeaders(w, "application/octet-stream", cacheImmutable)
		_, _ = w.Write(head.Token)
		return
	}
	publicHeaders(w, "text/plain; charset=utf-8", cacheImmutable)
	_, _ = w.Write(head.Checkpoint)
}

func (p *tlogPublisher) tile(w http.ResponseWriter, r *http.Request) {
	t, err := proof.ParseTilePath(strings.TrimPrefix(r.URL.Path, "/"))
	if errors.Is(err, proof.ErrEntryBundle) {
		writeProblem(w, http.StatusNotFound, "entry bundles are not published: the records name who exchanged with whom; only hash tiles are")
		return
	}
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "not a hash tile path of c2sp.org/tlog-tiles: /tile/<L>/<N>[.p/<W>]")
		return
	}
	latest := p.latest(w)
	if latest == nil {
		return
	}
	if !t.In(latest.Size) {
		writeProblem(w, http.StatusNotFound, "no tile "+t.Path()+" in the tree of the newest checkpoint, size "+strconv.FormatUint(latest.Size, 10))
		return
	}
	data, err := proof.ReadTile(r.Context(), p.log.Store(), t, latest.Size)
	if err != nil {
		// The tree holds it: the store is at fault, not the client.
		p.opts.logger().ErrorContext(r.Context(), "tlog: read tile", "tile", t.Path(), "err", err)
		writeProblem(w, http.StatusInternalServerError, "the evidence log is not available")
		return
	}
	publicHeaders(w, "application/octet-stream", cacheImmutable)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

// ConsistencyProof is the body of GET /proof/consistency: the RFC 9162
// section 2.1.4 proof that the tree of size New extends the tree of size
// Old, hashes in base64. A verifier checks it against the roots of two
// checkpoints it has verified, never against anything the server says.
type ConsistencyProof struct {
	Old   uint64   `json:"old"`
	New   uint64   `json:"new"`
	Proof []string `json:"proof"`
}

func (p *tlogPublisher) consistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(q) != 2 || len(q["old"]) != 1 || len(q["new"]) != 1 {
		writeProblem(w, http.StatusBadRequest, "use ?old=SIZE&new=SIZE, once each")
		return
	}
	oldSize, ok1 := parseSize(q.Get("old"))
	newSize, ok2 := parseSize(q.Get("new"))
	if !ok1 || !ok2 {
		writeProblem(w, http.StatusBadRequest, "old and new are tree sizes, in decimal")
		return
	}
	if oldSize > newSize {
		writeProblem(w, http.StatusBadRequest, "old is larger than new")
		return
	}
	latest := p.latest(w)
	if latest == nil {
		return
	}
	if newSize > latest.Size {
		writeProblem(w, http.StatusNotFound, "no tree of size "+strconv.FormatUint(newSize, 10)+": the newest checkpoint is of size "+strconv.FormatUint(latest.Size, 10))
		return
	}
	hashes, err := proof.ConsistencyProof(r.Context(), p.log.Store(), oldSize, newSize)
	if err != nil {
		p.opts.logger().ErrorContext(r.Context(), "tlog: consistency proof", "old", oldSize, "new", newSize, "err", err)
		writeProblem(w, http.StatusInternalServerError, "the evidence log is not available")
		return
	}
	body := ConsistencyProof{Old: oldSize, New: newSize, Proof: make([]string, len(hashes))}
	for i, h := range hashes {
		body.Proof[i] = base64.StdEncoding.EncodeToString(h)
	}
	publicHeaders(w, "application/json", cacheImmutable)
	writeJSON(w, http.StatusOK, body)
}

// parseSize reads a tree size: decimal, no sign, no leading zero.
func parseSize(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
