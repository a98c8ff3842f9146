package gateway

import (
	"errors"
	"io"
	"mime"
	"net/http"

	"pec/gateway/api"
	"pec/middleoffice"
)

// The partner administration API, for principals with the admin role
// (middleoffice.Admin asks the policy: ActionAdminister), over mutual TLS
// like every /v1 route:
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

// maxPartnerBytes bounds a partner's JSON: certificates and OpenPGP keys
// included.
const maxPartnerBytes = 1 << 20

type partnerHandlers struct {
	admin *middleoffice.Admin
}

func registerPartners(v1 *http.ServeMux, m *metrics, e *edge, pol *middleoffice.Policy, admin *middleoffice.Admin) {
	h := &partnerHandlers{admin: admin}
	read := operation{name: "directory: read"}
	change := operation{name: "directory: change", outcome: "the change may not have been applied; list the partner to see"}
	route := func(pattern, name string, op operation, f func(http.ResponseWriter, *http.Request, *middleoffice.Principal) error) {
		v1.Handle(pattern, m.instrument(name, e.handle(op, func(w http.ResponseWriter, r *http.Request) error {
			// The policy first (the service asks it again): a client that
			// may not administer learns nothing of what its body would
			// have been refused for.
			by := principal(pol, r)
			if err := admin.Authorize(by); err != nil {
				return err
			}
			return f(w, r, by)
		})))
	}
	route("GET /v1/partners", "/v1/partners", read, h.list)
	route("POST /v1/partners", "/v1/partners", change, h.add)
	route("GET /v1/partners/{id}", "/v1/partners/{id}", read, h.get)
	route("PUT /v1/partners/{id}", "/v1/partners/{id}", change, h.replace)
	route("PATCH /v1/partners/{id}", "/v1/partners/{id}", change, h.patch)
	route("POST /v1/partners/{id}/disable", "/v1/partners/{id}/disable", change, h.setDisabled(true))
	route("POST /v1/partners/{id}/enable", "/v1/partners/{id}/enable", change, h.setDisabled(false))
}

func (h *partnerHandlers) list(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) error {
	partners, err := h.admin.Partners(r.Context(), by)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.PartnerList{Partners: partners})
	return nil
}

func (h *partnerHandlers) get(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) error {
	p, err := h.admin.Partner(r.Context(), by, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (h *partnerHandlers) add(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) error {
	body, err := readBody(w, r, api.MediaJSON)
	if err != nil {
		return err
	}
	p, err := middleoffice.DecodePartner(body)
	if err != nil {
		return err
	}
	added, err := h.admin.Add(r.Context(), by, p)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/partners/"+added.ID)
	changed(w, http.StatusCreated, added)
	return nil
}

func (h *partnerHandlers) replace(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) error {
	body, err := readBody(w, r, api.MediaJSON)
	if err != nil {
		return err
	}
	p, err := middleoffice.DecodePartner(body)
	if err != nil {
		return err
	}
	if p.ID != r.PathValue("id") {
		return invalidField("/id", "the partner's id must be the one of the URL")
	}
	if p, err = h.admin.Replace(r.Context(), by, p); err != nil {
		return err
	}
	changed(w, http.StatusOK, p)
	return nil
}

func (h *partnerHandlers) patch(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) error {
	body, err := readBody(w, r, api.MediaMergePatch)
	if err != nil {
		return err
	}
	p, err := h.admin.Patch(r.Context(), by, r.PathValue("id"), body)
	if err != nil {
		return err
	}
	changed(w, http.StatusOK, p)
	return nil
}

func (h *partnerHandlers) setDisabled(disabled bool) func(http.ResponseWriter, *http.Request, *middleoffice.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, by *middleoffice.Principal) error {
		p, err := h.admin.SetDisabled(r.Context(), by, r.PathValue("id"), disabled)
		if err != nil {
			return err
		}
		changed(w, http.StatusOK, p)
		return nil
	}
}

// changed answers a change with the partner and its evidence id.
func changed(w http.ResponseWriter, status int, p middleoffice.Partner) {
	if p.EvidenceID != "" {
		w.Header().Set(api.EvidenceHeader, p.EvidenceID)
	}
	writeJSON(w, status, p)
}

// readBody reads a request body of at most maxPartnerBytes whose media
// type is want (application/json accepted too).
func readBody(w http.ResponseWriter, r *http.Request, want string) ([]byte, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || (mt != want && mt != api.MediaJSON) {
		return nil, refuse(api.TypeUnsupportedMediaType, "content type must be "+want)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPartnerBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(maxPartnerBytes)
		}
		return nil, refuse(api.TypeMalformedRequest, "the request body could not be read")
	}
	return body, nil
}
