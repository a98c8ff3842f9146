package gateway

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"pec/middleoffice"
)

// The partner administration API, for principals with the admin role
// (middleoffice.ActionAdminister), over mutual TLS like every /v1 route:
//
//	GET   /v1/partners                 the directory: {"partners": [...]}
//	POST  /v1/partners                 add a partner (201, Location)
//	GET   /v1/partners/{id}            one partner
//	PUT   /v1/partners/{id}            replace it whole
//	PATCH /v1/partners/{id}            change some fields: a JSON merge patch (RFC 7396)
//	POST  /v1/partners/{id}/disable    refuse its certificates from its next request
//	POST  /v1/partners/{id}/enable     accept them again
//
// Every change is an admin.action record of the evidence log, appended
// before the change is applied; its id is in the PEC-Evidence-ID header
// and in the partner's evidence_id.

// PartnerList is the body of GET /v1/partners.
type PartnerList struct {
	Partners []middleoffice.Partner `json:"partners"`
}

// maxPartnerBytes bounds a partner's JSON: certificates and OpenPGP keys
// included.
const maxPartnerBytes = 1 << 20

type partnerHandlers struct {
	pol *middleoffice.Policy
	dir *middleoffice.Directory
	log *slog.Logger
}

func registerPartners(v1 *http.ServeMux, m *metrics, pol *middleoffice.Policy, log *slog.Logger) {
	h := &partnerHandlers{pol: pol, dir: pol.Directory(), log: log}
	route := func(pattern, name string, f func(http.ResponseWriter, *http.Request, *middleoffice.Principal)) {
		v1.Handle(pattern, m.instrument(name, h.admin(f)))
	}
	route("GET /v1/partners", "/v1/partners", h.list)
	route("POST /v1/partners", "/v1/partners", h.add)
	route("GET /v1/partners/{id}", "/v1/partners/{id}", h.get)
	route("PUT /v1/partners/{id}", "/v1/partners/{id}", h.replace)
	route("PATCH /v1/partners/{id}", "/v1/partners/{id}", h.patch)
	route("POST /v1/partners/{id}/disable", "/v1/partners/{id}/disable", h.setDisabled(true))
	route("POST /v1/partners/{id}/enable", "/v1/partners/{id}/enable", h.setDisabled(false))
}

// admin lets in the principals the policy lets administer.
func (h *partnerHandlers) admin(f func(http.ResponseWriter, *http.Request, *middleoffice.Principal)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pr := principal(h.pol, r)
		if err := h.pol.Authorize(pr, middleoffice.ActionAdminister, middleoffice.Resource{}); err != nil {
			writeForbidden(w, err)
			return
		}
		f(w, r, pr)
	})
}

func (h *partnerHandlers) list(w http.ResponseWriter, _ *http.Request, _ *middleoffice.Principal) {
	writeJSON(w, http.StatusOK, PartnerList{Partners: h.dir.Partners()})
}

func (h *partnerHandlers) get(w http.ResponseWriter, r *http.Request, _ *middleoffice.Principal) {
	p, ok := h.dir.Partner(r.PathValue("id"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no partner "+quote(r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (h *partnerHandlers) add(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) {
	body, ok := readBody(w, r, "application/json")
	if !ok {
		return
	}
	p, err := middleoffice.DecodePartner(body)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	added, err := h.dir.Add(r.Context(), by, p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/partners/"+added.ID)
	h.changed(w, http.StatusCreated, added)
}

func (h *partnerHandlers) replace(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) {
	body, ok := readBody(w, r, "application/json")
	if !ok {
		return
	}
	p, err := middleoffice.DecodePartner(body)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if p.ID != r.PathValue("id") {
		writeProblem(w, http.StatusBadRequest, "id: the partner's id must be the one of the URL")
		return
	}
	p, err = h.dir.Replace(r.Context(), by, p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.changed(w, http.StatusOK, p)
}

func (h *partnerHandlers) patch(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) {
	body, ok := readBody(w, r, "application/merge-patch+json")
	if !ok {
		return
	}
	p, err := h.dir.PatchPartner(r.Context(), by, r.PathValue("id"), body)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.changed(w, http.StatusOK, p)
}

func (h *partnerHandlers) setDisabled(disabled bool) func(http.ResponseWriter, *http.Request, *middleoffice.Principal) {
	return func(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) {
		p, err := h.dir.SetDisabled(r.Context(), by, r.PathValue("id"), disabled)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.changed(w, http.StatusOK, p)
	}
}

// changed answers a change with the partner and its evidence id.
func (h *partnerHandlers) changed(w http.ResponseWriter, status int, p middleoffice.Partner) {
	if p.EvidenceID != "" {
		w.Header().Set("PEC-Evidence-ID", p.EvidenceID)
	}
	writeJSON(w, status, p)
}

// fail answers an error of the directory: the administrator's mistakes are
// 4xx with their reason (our own text, naming fields and partners, which
// an administrator may see); our failures are logged and answered without
// their text.
func (h *partnerHandlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	if ie, ok := errors.AsType[*middleoffice.InvalidError](err); ok {
		writeProblem(w, http.StatusBadRequest, strings.Join(ie.Faults, "; "))
		return
	}
	switch {
	case errors.Is(err, middleoffice.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "no partner "+quote(r.PathValue("id")))
	case errors.Is(err, middleoffice.ErrExists):
		writeProblem(w, http.StatusConflict, "a partner with this id exists: change it with PUT or PATCH /v1/partners/{id}")
	case errors.Is(err, middleoffice.ErrConflict):
		writeProblem(w, http.StatusConflict, strings.TrimPrefix(err.Error(), "middleoffice: "))
	case errors.Is(err, middleoffice.ErrNoEvidence):
		writeProblem(w, http.StatusServiceUnavailable, "this node keeps no evidence log: its directory takes no changes")
	case temporary(err):
		h.log.ErrorContext(r.Context(), "directory: change", "err", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the evidence log is temporarily unavailable: nothing was changed; try again")
	default:
		h.log.ErrorContext(r.Context(), "directory: change", "err", err)
		writeProblem(w, http.StatusInternalServerError, "internal failure: the change may not have been applied; list the partner to see")
	}
}

// readBody reads a request body of at most maxPartnerBytes whose media
// type is want (application/json accepted too). It answers the problem
// itself and returns false when the body is not acceptable.
func readBody(w http.ResponseWriter, r *http.Request, want string) ([]byte, bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || (mt != want && mt != "application/json") {
		writeProblem(w, http.StatusUnsupportedMediaType, "content type must be "+want)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPartnerBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request larger than %d bytes", maxPartnerBytes))
		} else {
			writeProblem(w, http.StatusBadRequest, "the request body could not be read")
		}
		return nil, false
	}
	return body, true
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}
