package middleoffice_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"pec/middleoffice"
)

// FuzzDecodeManifest: the manifest of POST /v1/exchanges. A manifest is
// taken or refused with a *ManifestError, never a panic; one taken is
// valid, survives a round trip through its JSON, and has one digest.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"recipient": "b", "procedure": "dossier", "subject": "Demande", "reference": "R-1", "documents": [{"name": "a.pdf", "media_type": "application/pdf", "sha256": "` + hex64 + `", "size": 10}], "idempotency_key": "k-1"}`))
	f.Add([]byte(`{"recipient": "b", "procedure": "dossier", "documents": [{"name": "a.pdf", "media_type": "application/pdf; charset=binary", "type": "invoice", "sha256": "` + hex64 + `", "size": 0}, {"name": "a.pdf", "media_type": "text", "sha256": "00", "size": -1}]}`))
	f.Add([]byte(`{"recipient": "B", "procedure": "", "documents": [], "extra": 1}`))
	f.Add([]byte(`{"recipient": "b", "procedure": "p", "documents": [{"name": "../etc/passwd", "media_type": "a/b", "sha256": "` + hex64 + `", "size": 1}]} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := middleoffice.DecodeManifest(data)
		if err != nil {
			if _, ok := errors.AsType[*middleoffice.ManifestError](err); !ok {
				t.Fatalf("not a *ManifestError: %T %v", err, err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded, then invalid: %v", err)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		n, err := middleoffice.DecodeManifest(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if diff := cmp.Diff(m, n); diff != "" {
			t.Fatalf("round trip changed the manifest:\n%s", diff)
		}
		if string(middleoffice.ManifestDigest(m)) != string(middleoffice.ManifestDigest(n)) {
			t.Fatal("two digests for one manifest")
		}
	})
}

const hex64 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"

// TestDecodeManifest: each fault named by its field.
func TestDecodeManifest(t *testing.T) {
	t.Parallel()
	doc := `{"name": "a.pdf", "media_type": "application/pdf", "sha256": "` + hex64 + `", "size": 3}`
	m, err := middleoffice.DecodeManifest([]byte(`{"recipient": "b", "procedure": "dossier", "documents": [` + doc + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Documents[0].SHA256 != "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" {
		t.Errorf("digest not kept in lowercase: %s", m.Documents[0].SHA256)
	}
	for name, tc := range map[string]struct{ json, fault string }{
		"unknown field":   {`{"recipient": "b", "procedure": "p", "documents": [` + doc + `], "x": 1}`, "unknown field"},
		"trailing":        {`{"recipient": "b", "procedure": "p", "documents": [` + doc + `]} []`, "data after"},
		"recipient":       {`{"recipient": "B B", "procedure": "p", "documents": [` + doc + `]}`, "recipient:"},
		"procedure":       {`{"recipient": "b", "documents": [` + doc + `]}`, "procedure:"},
		"no documents":    {`{"recipient": "b", "procedure": "p", "documents": []}`, "documents: at least one"},
		"same name":       {`{"recipient": "b", "procedure": "p", "documents": [` + doc + `, ` + doc + `]}`, "documents[1].name"},
		"path":            {`{"recipient": "b", "procedure": "p", "documents": [{"name": "x/../y", "media_type": "a/b", "sha256": "` + hex64 + `", "size": 1}]}`, "documents[0].name"},
		"media type":      {`{"recipient": "b", "procedure": "p", "documents": [{"name": "y", "media_type": "pdf", "sha256": "` + hex64 + `", "size": 1}]}`, "documents[0].media_type"},
		"digest":          {`{"recipient": "b", "procedure": "p", "documents": [{"name": "y", "media_type": "a/b", "sha256": "abc", "size": 1}]}`, "documents[0].sha256"},
		"size":            {`{"recipient": "b", "procedure": "p", "documents": [{"name": "y", "media_type": "a/b", "sha256": "` + hex64 + `", "size": -1}]}`, "documents[0].size"},
		"subject control": {`{"recipient": "b", "procedure": "p", "subject": "a\u0007", "documents": [` + doc + `]}`, "subject:"},
		"reference lines": {`{"recipient": "b", "procedure": "p", "reference": "a\nb", "documents": [` + doc + `]}`, "reference:"},
		"idempotency key": {`{"recipient": "b", "procedure": "p", "idempotency_key": "a b", "documents": [` + doc + `]}`, "idempotency_key:"},
		"not JSON":        {`recipient=b`, "malformed JSON"},
		"type":            {`{"recipient": "b", "procedure": "p", "documents": [{"name": "y", "media_type": "a/b", "type": "Invoice!", "sha256": "` + hex64 + `", "size": 1}]}`, "documents[0].type"},
	} {
		_, err := middleoffice.DecodeManifest([]byte(tc.json))
		me, ok := errors.AsType[*middleoffice.ManifestError](err)
		if !ok {
			t.Errorf("%s: %v, want a *ManifestError", name, err)
			continue
		}
		if !containsFault(me.Faults, tc.fault) {
			t.Errorf("%s: faults %q, want one with %q", name, me.Faults, tc.fault)
		}
	}
}

func containsFault(faults []string, s string) bool {
	return slices.ContainsFunc(faults, func(f string) bool { return strings.Contains(f, s) })
}
