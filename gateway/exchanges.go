package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"pec/gateway/api"
	"pec/middleoffice"
)

// The exchange over mutual TLS (the routes are listed in package api and
// gateway/openapi.yaml). Submissions and deliveries stream: a document
// goes from the connection through the service's hashing and encryption
// to the store, never whole in memory; its read deadline moves with the
// upload's progress (idleTransfer without a byte ends it), so that a
// 1 GiB dossier is not cut by the listener's request timeout.

// idleTransfer is how long an upload or a download may stall (a
// variable for the tests only).
var idleTransfer = 30 * time.Second

// maxPartHeader bounds the bytes a submission may spend on a part's
// headers and boundary, on top of the declared sizes.
const maxPartHeader = 16 << 10

type exchangeHandlers struct {
	x       *middleoffice.Exchanges
	pol     *middleoffice.Policy
	uploads *middleoffice.Uploads
}

func registerExchanges(v1 *http.ServeMux, m *metrics, e *edge, pol *middleoffice.Policy, x *middleoffice.Exchanges, uploads *middleoffice.Uploads) {
	h := &exchangeHandlers{x: x, pol: pol, uploads: uploads}
	submit := operation{name: "exchange: submission", outcome: "the submission was not accepted; send it again (with the same Idempotency-Key)"}
	read := operation{name: "exchange: read"}
	ack := operation{name: "exchange: acknowledgment", outcome: "the acknowledgment may not have been recorded; read the exchange to see"}
	route := func(pattern, name string, op operation, f func(http.ResponseWriter, *http.Request) error) {
		v1.Handle(pattern, m.instrument(name, e.handle(op, cutWhenGone(e, op, f))))
	}
	route("POST /v1/exchanges", "/v1/exchanges", submit, h.submit)
	route("GET /v1/inbox", "/v1/inbox", read, h.inbox)
	route("GET /v1/exchanges/{id}", "/v1/exchanges/{id}", read, h.status)
	route("GET /v1/exchanges/{id}/receipt", "/v1/exchanges/{id}/receipt", read, h.receipt)
	route("GET /v1/exchanges/{id}/seal", "/v1/exchanges/{id}/seal", read, h.seal)
	route("GET /v1/exchanges/{id}/delivery", "/v1/exchanges/{id}/delivery", read, h.delivery)
	route("GET /v1/exchanges/{id}/documents/{n}", "/v1/exchanges/{id}/documents/{n}", read, h.document)
	route("POST /v1/exchanges/{id}/ack", "/v1/exchanges/{id}/ack", ack, h.ack)
}

// cutWhenGone cuts the connection of a request whose client went away —
// or stalled longer than idleTransfer with its connection open: net/http
// cancels the request's context on any read error of the connection,
// its deadline passing included — rather than let net/http answer the
// handler's silence with 200 and an empty body, which a stalled client
// would read as success.
func cutWhenGone(e *edge, op operation, f func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := f(w, r)
		if err != nil && r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			e.log.InfoContext(r.Context(), op.name+": client went away", "err", err)
			panic(http.ErrAbortHandler)
		}
		return err
	}
}

// submit is POST /v1/exchanges.
func (h *exchangeHandlers) submit(w http.ResponseWriter, r *http.Request) error {
	sender := principal(h.pol, r)
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != api.MediaMultipartForm && mt != api.MediaMultipartMixed) || params["boundary"] == "" {
		return refuse(api.TypeUnsupportedMediaType, "content type must be multipart/form-data or multipart/mixed (with a boundary): the manifest part, then the documents")
	}
	body := &progressReader{r: r.Body, rc: http.NewResponseController(w)}
	body.extend()
	limited := &limitReader{r: body, left: middleoffice.MaxManifestSize + maxPartHeader}
	mr := multipart.NewReader(limited, params["boundary"])
	form := mt == api.MediaMultipartForm

	// Every refusal of the manifest is evidence, as a document's is: the
	// sender is known (its certificate), whatever it sent. Only a client
	// that went away is not answered, nor recorded.
	refuseManifest := func(raw []byte, fault string) error {
		if err := r.Context().Err(); err != nil {
			return err
		}
		return h.x.RefuseManifest(r.Context(), sender, raw, &middleoffice.ManifestError{Faults: []string{fault}})
	}
	part, err := mr.NextPart()
	if errors.Is(err, io.EOF) {
		return refuseManifest(nil, "the body has no part: the first must be the manifest")
	} else if err != nil {
		return refuseManifest(nil, "the body is not multipart with a first part, the manifest: "+partError(err))
	}
	if form && part.FormName() != api.ManifestPart {
		return refuseManifest(nil, fmt.Sprintf("the first part is %q: it must be the manifest (form name %q)", part.FormName(), api.ManifestPart))
	}
	raw, err := io.ReadAll(io.LimitReader(part, middleoffice.MaxManifestSize+1))
	if err != nil {
		return refuseManifest(raw, "the manifest part cannot be read: "+partError(err))
	}
	m, err := middleoffice.DecodeManifest(raw)
	if err == nil {
		err = idempotencyKey(&m, r.Header.Get(api.IdempotencyHeader))
	}
	if err != nil {
		if _, ok := errors.AsType[*middleoffice.ManifestError](err); ok {
			return h.x.RefuseManifest(r.Context(), sender, raw, err)
		}
		return err
	}
	// The declared sizes bound the rest of the body (the service refuses
	// sizes over its limits before it reads a document).
	limited.left = maxPartHeader
	last := -1 // the last document that comes as a part
	for i, d := range m.Documents {
		if d.Upload != "" {
			continue
		}
		last = i
		// Saturating: a size the service will refuse may be near MaxInt64.
		limited.left = min(limited.left+min(d.Size, 1<<50)+maxPartHeader, 1<<56)
	}
	if last < 0 {
		// Every document is an upload: the body ends after the manifest.
		if _, err := mr.NextPart(); !errors.Is(err, io.EOF) {
			return refuseManifest(raw, "every document names an upload, yet a part follows the manifest")
		}
	}
	docs := &partSource{mr: mr, form: form, last: last, uploads: h.uploads, sender: sender, manifest: m.Documents}
	s, err := h.x.Submit(r.Context(), sender, m, docs)
	docs.release(err == nil && !s.Replayed)
	if err != nil {
		return err
	}
	// The answer's write deadline from now, however long the node took.
	_ = body.rc.SetWriteDeadline(time.Now().Add(idleTransfer))
	w.Header().Set("Location", "/v1/exchanges/"+s.Exchange)
	w.Header().Set(api.EvidenceHeader, s.EvidenceID)
	status := http.StatusCreated
	if s.Replayed {
		status = http.StatusOK
	}
	writeJSON(w, status, api.Submission{Exchange: s.Exchange, EvidenceID: s.EvidenceID, SubmittedAt: s.SubmittedAt, Receipt: s.Receipt, Replayed: s.Replayed})
	return nil
}

// idempotencyKey puts the Idempotency-Key header's key in m; the
// manifest's own key, when it has one, must be the same.
func idempotencyKey(m *middleoffice.Manifest, header string) error {
	header = strings.TrimSpace(header)
	switch {
	case header == "":
		return nil
	case m.IdempotencyKey == "":
		m.IdempotencyKey = header
		return m.Validate()
	case m.IdempotencyKey != header:
		return &middleoffice.ManifestError{Faults: []string{"idempotency_key: not the Idempotency-Key header's"}}
	}
	return nil
}

// partError is what a sender may read of a multipart error.
func partError(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "the body ended early"
	}
	if errors.Is(err, errBodyLimit) {
		return "the body is larger than its manifest declares"
	}
	return strings.TrimPrefix(err.Error(), "multipart: ")
}

// partSource gives Submit the document parts in order. After the last
// document's content, it checks that no part follows: a body with more
// parts than the manifest declares is refused (incomplete), not accepted
// with documents nobody declared.
type partSource struct {
	mr   *multipart.Reader
	form bool
	last int // the index of the last document that is a part; -1: none

	uploads  *middleoffice.Uploads
	sender   *middleoffice.Principal
	manifest []middleoffice.Document // as sent: the uploads they name (the service keeps none)
	taken    []func(accepted bool)
}

// release gives back the uploads the submission read: removed when the
// exchange was accepted (their content is now its envelopes).
func (s *partSource) release(accepted bool) {
	for _, done := range s.taken {
		done(accepted)
	}
}

func (s *partSource) Document(ctx context.Context, i int, d middleoffice.Document) (io.Reader, error) {
	if i < len(s.manifest) && s.manifest[i].Upload != "" {
		return s.upload(ctx, i, s.manifest[i])
	}
	p, err := s.mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("document %d: %s", i, partError(err))
	}
	if s.form && p.FormName() != api.DocumentPart {
		return nil, fmt.Errorf("document %d: the part is %q, not %q", i, p.FormName(), api.DocumentPart)
	}
	if i < s.last {
		return p, nil
	}
	return &lastPart{p: p, mr: s.mr}, nil
}

// upload is document i's content from the sender's upload it names.
func (s *partSource) upload(ctx context.Context, i int, d middleoffice.Document) (io.Reader, error) {
	if s.uploads == nil {
		return nil, fmt.Errorf("document %d: this node keeps no uploads", i)
	}
	up, content, done, err := s.uploads.Take(ctx, s.sender, d.Upload)
	switch {
	case errors.Is(err, middleoffice.ErrUploadNotFound):
		return nil, fmt.Errorf("document %d: no upload %q of this partner (expired, or submitted already)", i, d.Upload)
	case errors.Is(err, middleoffice.ErrUploadIncomplete):
		return nil, fmt.Errorf("document %d: the upload %q holds %d of its %d bytes: finish it first", i, d.Upload, up.Offset, up.Size)
	case errors.Is(err, middleoffice.ErrUploadBusy):
		return nil, fmt.Errorf("document %d: the upload %q is in use by another request", i, d.Upload)
	case err != nil:
		return nil, err
	}
	s.taken = append(s.taken, done)
	if up.Size != d.Size || up.SHA256 != d.SHA256 {
		return nil, fmt.Errorf("document %d: the upload %q was declared %d bytes of SHA-256 %s, not the document's %d bytes of %s", i, d.Upload, up.Size, up.SHA256, d.Size, d.SHA256)
	}
	return content, nil
}

// lastPart is the last document's part: at its end, the body must end too.
type lastPart struct {
	p    *multipart.Part
	mr   *multipart.Reader
	done bool
}

func (l *lastPart) Read(b []byte) (int, error) {
	n, err := l.p.Read(b)
	if errors.Is(err, io.EOF) && !l.done {
		l.done = true
		if _, next := l.mr.NextPart(); !errors.Is(next, io.EOF) {
			if next == nil {
				return n, errors.New("more parts than the manifest's documents")
			}
			return n, errors.New(partError(next))
		}
	}
	return n, err
}

// errBodyLimit: a submission's body is longer than its manifest declares.
var errBodyLimit = errors.New("the body is larger than its manifest declares")

// limitReader fails, rather than ends, past its bound.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(b []byte) (int, error) {
	if l.left <= 0 {
		return 0, errBodyLimit
	}
	if int64(len(b)) > l.left {
		b = b[:l.left]
	}
	n, err := l.r.Read(b)
	l.left -= int64(n)
	return n, err
}

// progressReader moves the connection's read deadline on while bytes
// come: a transfer may take as long as it needs, as long as it moves.
type progressReader struct {
	r    io.Reader
	rc   *http.ResponseController
	last time.Time
}

func (p *progressReader) extend() {
	p.last = time.Now()
	// The write deadline too: the answer is written once the body is in.
	_ = p.rc.SetReadDeadline(p.last.Add(idleTransfer))
	_ = p.rc.SetWriteDeadline(p.last.Add(idleTransfer + time.Minute))
}

func (p *progressReader) Read(b []byte) (int, error) {
	// Before the read, not after its bytes: the deadline bounds the wait
	// for the sender, not the time the node spent between two reads (a
	// large upload's writes wait behind the others' for the disk).
	if time.Since(p.last) > time.Second {
		p.extend()
	}
	return p.r.Read(b)
}

// progressWriter does the same for the write deadline of a download.
type progressWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	last time.Time
}

func newProgressWriter(w http.ResponseWriter) *progressWriter {
	p := &progressWriter{w: w, rc: http.NewResponseController(w)}
	p.extend()
	return p
}

func (p *progressWriter) extend() {
	p.last = time.Now()
	_ = p.rc.SetWriteDeadline(p.last.Add(idleTransfer))
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if time.Since(p.last) > time.Second {
		p.extend()
	}
	return p.w.Write(b)
}

// inbox is GET /v1/inbox?after=ID&limit=N.
func (h *exchangeHandlers) inbox(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > middleoffice.MaxInboxPage {
			return invalidField("/limit", fmt.Sprintf("not a number between 1 and %d", middleoffice.MaxInboxPage))
		}
		limit = n
	}
	list, err := h.x.Inbox(r.Context(), principal(h.pol, r), q.Get("after"), limit)
	if err != nil {
		return err
	}
	out := api.Inbox{Exchanges: make([]middleoffice.Exchange, 0, len(list))}
	for _, ex := range list {
		out.Exchanges = append(out.Exchanges, *ex)
	}
	if len(list) == limit {
		out.Next = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// status is GET /v1/exchanges/{id}.
func (h *exchangeHandlers) status(w http.ResponseWriter, r *http.Request) error {
	ex, err := h.x.Status(r.Context(), principal(h.pol, r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ex)
	return nil
}

// receipt is GET /v1/exchanges/{id}/receipt: the sender's.
func (h *exchangeHandlers) receipt(w http.ResponseWriter, r *http.Request) error {
	pr := principal(h.pol, r)
	ex, err := h.x.Status(r.Context(), pr, r.PathValue("id"))
	if err != nil {
		return err
	}
	if ex.Sender != pr.ID() || len(ex.Receipt) == 0 {
		return middleoffice.ErrExchangeNotFound
	}
	writeDER(w, api.MediaCMSSigned, ex.ID+"-receipt.p7m", ex.Receipt)
	return nil
}

// seal is GET /v1/exchanges/{id}/seal.
func (h *exchangeHandlers) seal(w http.ResponseWriter, r *http.Request) error {
	seal, err := h.x.Seal(r.Context(), principal(h.pol, r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeDER(w, api.MediaCMSSigned, "seal.p7m", seal)
	return nil
}

func writeDER(w http.ResponseWriter, mediaType, name string, der []byte) {
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("Content-Length", strconv.Itoa(len(der)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(der)
}

// delivery is GET /v1/exchanges/{id}/delivery: the seal and every
// envelope, one multipart/mixed answer, one delivery.retrieved record.
func (h *exchangeHandlers) delivery(w http.ResponseWriter, r *http.Request) error {
	d, err := h.x.Fetch(r.Context(), principal(h.pol, r), r.PathValue("id"))
	if err != nil {
		return err
	}
	defer d.Close()
	pw := newProgressWriter(w)
	mw := multipart.NewWriter(pw)
	w.Header().Set("Content-Type", api.MediaMultipartMixed+"; boundary="+mw.Boundary())
	w.Header().Set(api.EvidenceHeader, d.EvidenceID)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	part := func(mediaType, name string, size int64) (io.Writer, error) {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Type", mediaType)
		hdr.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
		hdr.Set("Content-Length", strconv.FormatInt(size, 10))
		return mw.CreatePart(hdr)
	}
	// Once the status is sent, a failure can only cut the answer short:
	// the client sees a truncated multipart, never a complete one.
	pw2, err := part(api.MediaCMSSigned, "seal.p7m", int64(len(d.Seal)))
	if err == nil {
		_, err = pw2.Write(d.Seal)
	}
	for _, doc := range d.Documents {
		if err != nil {
			break
		}
		var dst io.Writer
		if dst, err = part(api.MediaCMSEnveloped, doc.Name+".p7m", doc.Envelope.Size()); err == nil {
			_, err = io.Copy(dst, doc.Envelope)
		}
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		panic(http.ErrAbortHandler) // cut the connection: the answer is incomplete
	}
	return nil
}

// document is GET /v1/exchanges/{id}/documents/{n} (0-based), with Range
// requests, to resume a large download.
func (h *exchangeHandlers) document(w http.ResponseWriter, r *http.Request) error {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 || strconv.Itoa(n) != r.PathValue("n") {
		return refuse(api.TypeNotFound, "documents/{n}: n is the document's index in the manifest, from 0")
	}
	// The index is checked before the fetch: a fetch is evidence
	// (delivery.retrieved, naming the envelopes handed out), and a
	// request for a document that does not exist hands out nothing.
	pr := principal(h.pol, r)
	ex, err := h.x.Status(r.Context(), pr, r.PathValue("id"))
	if err != nil {
		return err
	}
	if ex.Recipient != pr.ID() {
		return middleoffice.ErrExchangeNotFound // its sender: the recipient's alone, as Fetch says
	}
	if count := len(ex.Manifest.Documents); n >= count {
		return refuse(api.TypeNotFound, fmt.Sprintf("the exchange has %d documents (0 to %d)", count, count-1))
	}
	d, err := h.x.Fetch(r.Context(), pr, r.PathValue("id"))
	if err != nil {
		return err
	}
	defer d.Close()
	if n >= len(d.Documents) {
		return fmt.Errorf("gateway: exchange %s: %d envelopes for %d documents", ex.ID, len(d.Documents), len(ex.Manifest.Documents))
	}
	doc := d.Documents[n]
	w.Header().Set("Content-Type", api.MediaCMSEnveloped)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": doc.Name + ".p7m"}))
	w.Header().Set(api.EvidenceHeader, d.EvidenceID)
	w.Header().Set("ETag", `"`+doc.EnvelopeSHA256+`"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(&progressResponse{ResponseWriter: w, pw: newProgressWriter(w)}, r, "", time.Time{}, io.NewSectionReader(doc.Envelope, 0, doc.Envelope.Size()))
	return nil
}

// progressResponse is a ResponseWriter whose body writes move the write
// deadline on.
type progressResponse struct {
	http.ResponseWriter
	pw *progressWriter
}

func (p *progressResponse) Write(b []byte) (int, error) { return p.pw.Write(b) }

// maxAckBody bounds POST /v1/exchanges/{id}/ack.
const maxAckBody = 2 << 20

// ack is POST /v1/exchanges/{id}/ack: JSON (api.AckRequest) or a bare
// DER CMS (application/pkcs7-mime).
func (h *exchangeHandlers) ack(w http.ResponseWriter, r *http.Request) error {
	var req api.AckRequest
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case api.MediaCMS:
		der, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAckBody))
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return tooLarge(maxAckBody)
			}
			return refuse(api.TypeMalformedRequest, "the body cannot be read")
		}
		req.Signed = der
	default:
		if err := decodeJSON(w, r, maxAckBody, &req); err != nil {
			if pe, ok := errors.AsType[*problemError](err); ok && pe.typ == api.TypeUnsupportedMediaType {
				return refuse(api.TypeUnsupportedMediaType, "content type must be application/json or application/pkcs7-mime")
			}
			return err
		}
	}
	ev, err := h.x.Ack(r.Context(), principal(h.pol, r), r.PathValue("id"), middleoffice.Acknowledgment{Signed: req.Signed, Reject: req.Reject})
	if err != nil {
		return err
	}
	w.Header().Set(api.EvidenceHeader, ev.EvidenceID)
	writeJSON(w, http.StatusOK, ev)
	return nil
}
