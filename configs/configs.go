// Package configs holds the commented pec.yaml that `pec init` writes. It is
// imported only by cmd/pec, which owns the configuration file as a whole.
package configs

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"
)

//go:embed pec.yaml.tmpl
var pecYAML string

var pecTemplate = template.Must(template.New("pec.yaml").Option("missingkey=error").Parse(pecYAML))

// Params fill in the parts of pec.yaml that depend on the machine: where the
// keys are, and the TSA policy.
type Params struct {
	Dev bool // written by `pec init` for development

	// PKCS#11 keys; Module empty selects software keys in KeyDir.
	Module       string
	TokenLabel   string
	PINFile      string
	SoftHSM2Conf string
	KeyDir       string

	PolicyOID string

	// DevCAURL, when set, turns the development CA on (the devca
	// section): the base URL of its CRL and OCSP responder.
	DevCAURL string
}

// Render returns pec.yaml for p.
func Render(p Params) ([]byte, error) {
	var buf bytes.Buffer
	if err := pecTemplate.Execute(&buf, p); err != nil {
		return nil, fmt.Errorf("configs: render pec.yaml: %w", err)
	}
	return buf.Bytes(), nil
}
