package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"pec/evidence"
	"pec/gateway"
	"pec/hsm"
	"pec/internal/devca"
	"pec/internal/devpki"
	"pec/proof"
	"pec/signing"
	"pec/tsa"
)

// pec keys rotate|csr|install|list: the rotation of the node's own keys
// (keystate.go says where generations are kept; reload.go how the running
// node takes them on SIGHUP).

// keyKinds are the KIND arguments.
var keyKinds = []string{"tsa", "proof", "signing", "tls"}

func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys rotate|csr|install|list",
		Short: "Rotate the node's keys: TSA, evidence log, signature profiles, TLS",
		Long: `keys replaces a key of the node without stopping it. 'rotate' makes a new key in the HSM and
its certificate from the development CA (pec.yaml's devca section); with a production CA, 'csr' makes
the new key and a PKCS#10 request signed by it, and 'install' brings the CA's certificate. The new key
is labelled BASE.GEN (BASE: pec.yaml's key_label, GEN: the UTC time), its certificate written beside
the first one, and both recorded in DATA_DIR/keys.json — pec.yaml is never rewritten. A running node
takes the new key on SIGHUP (kill -HUP PID), atomically and without a failed request, and records
the rotation as an admin.action record of the evidence log (subject keys.rotated, naming the old and
new certificates); a stopped node takes it when it starts. Tokens, signatures and proof bundles made
with the old key still verify: the evidence log keeps verifying its old checkpoints with the old key,
and its bundles carry the certificate of the key that signed them.
KIND: tsa, proof, signing PROFILE (every profile sharing PROFILE's key moves to the new one), tls.
Exit status: 0 done, 1 failed, 2 usage or input error.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("a subcommand is required: rotate, csr, install, list")}}
		},
	}
	cmd.AddCommand(newKeysRotateCommand(), newKeysCSRCommand(), newKeysInstallCommand(), newKeysListCommand())
	return cmd
}

// keyTarget is the key a command acts on: its slots (several for
// signing profiles sharing a key), the configuration's reference and the
// current chain.
type keyTarget struct {
	kind     string   // tsa, proof, signing, tls
	slots    []string // tsa | signing/a, signing/b...
	profiles []string // signing: the profiles sharing the key, sorted
	ref      keyRef   // of the first slot
	base     string   // the label of generation 0
	baseCert string   // the cert_file of generation 0
	chain    []*x509.Certificate
}

// parseKeyArgs reads KIND [PROFILE] and, with file, the last argument.
func parseKeyArgs(a []string, withFile bool) (kind, profile, file string, err error) {
	want := 1
	if withFile {
		want++
	}
	if len(a) == 0 {
		return "", "", "", &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("KIND is required: one of %s", strings.Join(keyKinds, ", "))}}
	}
	kind = a[0]
	if !slices.Contains(keyKinds, kind) {
		return "", "", "", &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("%q is not a key: one of %s", kind, strings.Join(keyKinds, ", "))}}
	}
	if kind == "signing" {
		want++
	}
	if len(a) != want {
		use := kind
		if kind == "signing" {
			use += " PROFILE"
		}
		if withFile {
			use += " CERT.pem"
		}
		return "", "", "", &exitError{code: exitUsage, err: usageMistake{fmt.Errorf("want %s", use)}}
	}
	if kind == "signing" {
		profile = a[1]
	}
	if withFile {
		file = a[len(a)-1]
	}
	return kind, profile, file, nil
}

// loadKeyTarget loads the configuration (its current keys applied) and
// the key of kind (and profile).
func loadKeyTarget(configPath, kind, profile string) (*File, *keyState, *keyTarget, error) {
	if configPath == "" {
		return nil, nil, nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--config FILE is required")}}
	}
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return nil, nil, nil, inputError(err)
	}
	st, err := applyKeyState(cfg)
	if err != nil {
		return nil, nil, nil, inputError(err)
	}
	slot := kind
	if kind == "signing" {
		slot = "signing/" + profile
	}
	ref, ok := cfg.keyRef(slot)
	if !ok {
		switch kind {
		case "signing":
			var names []string
			for _, p := range cfg.Signing.Profiles {
				names = append(names, p.Name)
			}
			return nil, nil, nil, usageError("no signature profile %q in %s (profiles: %s)", profile, cfg.path, strings.Join(names, ", "))
		case "proof":
			return nil, nil, nil, usageError("%s has no proof section: the node keeps no evidence log", cfg.path)
		default:
			return nil, nil, nil, usageError("%s has no %s certificate (tls.cert_file)", cfg.path, kind)
		}
	}
	t := &keyTarget{kind: kind, ref: ref, slots: []string{slot}}
	if kind == "signing" {
		// Every profile on this key moves with it.
		t.slots = nil
		for _, r := range cfg.keyRefs() {
			if strings.HasPrefix(r.slot, "signing/") && *r.label == *ref.label && *r.cert == *ref.cert {
				t.slots = append(t.slots, r.slot)
				t.profiles = append(t.profiles, strings.TrimPrefix(r.slot, "signing/"))
			}
		}
		slices.Sort(t.profiles)
	}
	t.base, t.baseCert = *ref.label, *ref.cert
	if s := st.Keys[slot]; s != nil && len(s.Generations) > 0 {
		t.base, t.baseCert = s.Generations[0].Label, cfg.keyPath(s.Generations[0].CertFile)
	}
	if t.chain, err = devpki.LoadCertsPEM(*ref.cert); err != nil || len(t.chain) == 0 {
		return nil, nil, nil, inputError(fmt.Errorf("%s: the current certificate %s: %v", slot, *ref.cert, err))
	}
	return cfg, st, t, nil
}

// generation is the GEN of a new key made at now.
func generation(now time.Time) string { return now.UTC().Format("20060102T150405Z") }

// newKey makes the next key of t in keys, of the current key's type
// (P-256 for the evidence log, which signs notes with it): BASE.GEN, or
// BASE.GEN-N when a key made in the same second has the label.
func newKey(ctx context.Context, keys hsm.KeyStore, t *keyTarget, now time.Time) (label string, key crypto.Signer, err error) {
	kt := hsm.ECP256
	if t.kind != "proof" {
		if kt, err = keyTypeOf(t.chain[0].PublicKey); err != nil {
			return "", nil, failure(fmt.Errorf("%s: %w", t.slots[0], err))
		}
	}
	gen := generation(now)
	for n := 1; n < 100; n++ {
		label = t.base + "." + gen
		if n > 1 {
			label += "-" + strconv.Itoa(n)
		}
		key, err = keys.GenerateKey(ctx, label, kt)
		if !errors.Is(err, hsm.ErrKeyExists) {
			break
		}
	}
	if err != nil {
		return "", nil, failure(fmt.Errorf("generate the new %s key: %w", t.kind, err))
	}
	return label, key, nil
}

func keyTypeOf(pub crypto.PublicKey) (hsm.KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return hsm.ECP256, nil
		case elliptic.P384():
			return hsm.ECP384, nil
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return hsm.RSA2048, nil
		case 3072:
			return hsm.RSA3072, nil
		}
	}
	return 0, fmt.Errorf("the current key is a %T the HSM cannot make again (ECDSA P-256 or P-384, RSA 2048 or 3072)", pub)
}

// certFileFor is where generation label's certificate goes: beside the
// first generation's, named after it (pki/tsa.pem: pki/tsa.GEN.pem).
func certFileFor(t *keyTarget, label string) string {
	dir, name := filepath.Split(t.baseCert)
	stem := strings.TrimSuffix(name, filepath.Ext(name))
	return filepath.Join(dir, stem+strings.TrimPrefix(label, t.base)+".pem")
}

// checkKeyCert checks that chain can serve as t's certificate with key:
// what the node will check when it takes it, said before it is installed.
func checkKeyCert(t *keyTarget, key crypto.Signer, chain []*x509.Certificate, now time.Time) error {
	var err error
	switch t.kind {
	case "tsa":
		err = tsa.CheckTSACertificate(chain[0], key.Public(), now)
	case "proof":
		if !samePublic(key.Public(), chain[0].PublicKey) {
			err = errors.New("the certificate is not that of the new key")
		} else if !proof.IsEvidenceLogCertificate(chain[0]) {
			err = fmt.Errorf("the certificate lacks the extended key usage %s of an evidence log: bundles would not verify", proof.OIDEvidenceLog)
		} else {
			_, err = proof.NewNoteVerifier("log", chain[0].PublicKey)
		}
	case "signing":
		_, err = signing.NewSigner(key, chain, signing.SignerOptions{Now: func() time.Time { return now }})
	case "tls":
		_, err = gateway.NewServerCertificate(chain, key)
	}
	return err
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// checkSameRoot checks that chain ends at the root the current chain ends
// at, when the current chain holds its root: relying parties (offline
// verifiers of tokens and bundles, monitors, TLS clients) trust that root.
func checkSameRoot(t *keyTarget, chain []*x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	n := 0
	for _, c := range t.chain {
		if string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("the certificate does not chain to the root of the current one (%s): relying parties would not trust it: %v", t.chain[len(t.chain)-1].Subject, err)
	}
	return nil
}

// issueDev makes t's new certificate for pub from the development CA: a
// copy of the current certificate's profile (subject, names, usages).
func issueDev(ca *devpki.CA, t *keyTarget, pub crypto.PublicKey, now time.Time) (*x509.Certificate, error) {
	old := t.chain[0]
	org := "PEC development"
	if len(old.Subject.Organization) > 0 {
		org = old.Subject.Organization[0]
	}
	// The node's own certificates name no revocation service: they go
	// into bundles and signatures verified offline (see issueDevPKI).
	ca.Revocation = devpki.RevocationURLs{}
	switch t.kind {
	case "tsa":
		return ca.IssueTSA(pub, old.Subject.CommonName, now)
	case "tls":
		return ca.IssueServer(pub, old.DNSNames, old.IPAddresses, now)
	case "signing":
		return ca.IssueDocumentSigner(pub, old.Subject.CommonName, org, now)
	default: // proof
		return ca.Issue(&x509.Certificate{
			Subject:            pkix.Name{CommonName: old.Subject.CommonName, Organization: []string{org}},
			NotBefore:          now.Add(-time.Hour),
			NotAfter:           now.Add(devpki.LeafValidity),
			KeyUsage:           x509.KeyUsageDigitalSignature,
			UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
		}, pub)
	}
}

// devCAName is the name under which the development CA's state lists
// the node's certificate of kind (those of pec init).
func devCAName(kind string) string {
	if kind == "tls" {
		return "server"
	}
	return kind
}

// install records chain as the new current generation of t (label), its
// certificate written beside the first one, and returns the generation.
func install(cfg *File, t *keyTarget, label string, chain []*x509.Certificate, via string, now time.Time, pending bool) (keyGeneration, string, error) {
	file := certFileFor(t, label)
	if err := writeFile(file, devpki.CertPEM(chain...), 0o644); err != nil {
		return keyGeneration{}, "", failure(err)
	}
	gen := keyGeneration{
		Label: label, CertFile: cfg.relPath(file), CertSHA256: certSHA256(chain[0]), CertSubject: chain[0].Subject.String(),
		At: now.UTC(), By: operatorName(), Via: via, Evidence: evidence.NewID(now), Profiles: t.profiles,
	}
	err := updateKeyState(cfg, func(st *keyState) error {
		for _, slot := range t.slots {
			s := st.Keys[slot]
			if s == nil {
				s = &keySlot{}
				st.Keys[slot] = s
			}
			if pending && (s.Pending == nil || s.Pending.Label != label) {
				return fmt.Errorf("%s: the pending key is no longer %s (another pec keys csr?)", slot, label)
			}
			if len(s.Generations) == 0 {
				// Generation 0: pec.yaml's key, named so that the file
				// alone says the whole history.
				s.Generations = append(s.Generations, keyGeneration{
					Label: t.base, CertFile: cfg.relPath(t.baseCert), CertSHA256: certSHA256(t.chain[0]), CertSubject: t.chain[0].Subject.String(),
				})
			}
			s.Generations = append(s.Generations, gen)
			s.Pending = nil
		}
		return nil
	})
	if err != nil {
		return keyGeneration{}, "", failure(err)
	}
	return gen, file, nil
}

// printRotated says what was done and what the operator does next.
func printRotated(out io.Writer, cfg *File, t *keyTarget, gen keyGeneration, file string, old *x509.Certificate, newCert *x509.Certificate) {
	what := t.kind + " key"
	if t.kind == "signing" {
		what = "key of the signing profiles " + strings.Join(t.profiles, ", ") + ":"
	}
	fmt.Fprintf(out, "pec keys: new %s %s (was %s)\n", what, gen.Label, *t.ref.label)
	fmt.Fprintf(out, "  certificate: %s (sha256 %s), valid until %s\n", file, gen.CertSHA256, newCert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "  replaces:    %s (sha256 %s)\n", *t.ref.cert, certSHA256(old))
	if t.kind == "proof" {
		ov, _ := proof.NewNoteVerifier(cfg.Proof.Origin, old.PublicKey)
		nv, _ := proof.NewNoteVerifier(cfg.Proof.Origin, newCert.PublicKey)
		if ov != nil && nv != nil {
			fmt.Fprintf(out, "  checkpoint key ID: %08x (was %08x)\n", nv.KeyID(), ov.KeyID())
		}
	}
	fmt.Fprintf(out, "  evidence:    %s (recorded by the node when it takes the key)\n", gen.Evidence)
	fmt.Fprintf(out, "  recorded in %s; a running node takes it on SIGHUP (%s), a stopped one when it starts\n", keyStatePath(cfg), hupHint(cfg))
}

// hupHint is how to send the node SIGHUP: with its pid when the data
// directory's lock file names it.
func hupHint(cfg *File) string {
	data, err := os.ReadFile(filepath.Join(cfg.DataDir, "pec.lock"))
	if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && perr == nil && pid > 0 {
		return fmt.Sprintf("kill -HUP %d", pid)
	}
	return "kill -HUP PID of its pec serve"
}

func newKeysRotateCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "rotate --config FILE (tsa | proof | signing PROFILE | tls)",
		Short: "Make a new key in the HSM and its certificate from the development CA",
		Long: `rotate makes a new key of the same type in the HSM, labelled BASE.GEN, and its certificate from the
development CA of pec.yaml's devca section (the same subject, names and usages as the current one),
writes the certificate beside the first one and records the new generation in DATA_DIR/keys.json. The
running node takes it on SIGHUP. Without a devca section the certificate comes from your CA: pec keys
csr, then pec keys install.`,
		Args: args(cobra.ArbitraryArgs), // parseKeyArgs
		RunE: func(cmd *cobra.Command, a []string) error {
			kind, profile, _, err := parseKeyArgs(a, false)
			if err != nil {
				return err
			}
			cfg, _, t, err := loadKeyTarget(configPath, kind, profile)
			if err != nil {
				return err
			}
			if !cfg.DevCA.Configured() {
				return usageError("%s has no devca section: the certificate of the new key comes from your CA: pec keys csr --config %s %s -o REQ.csr, then pec keys install --config %s %s CERT.pem",
					cfg.path, cfg.path, strings.Join(a, " "), cfg.path, strings.Join(a, " "))
			}
			return keysRotate(cmd.Context(), cmd.OutOrStdout(), cfg, t)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	return cmd
}

func keysRotate(ctx context.Context, out io.Writer, cfg *File, t *keyTarget) error {
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{})
	if err != nil {
		return failure(fmt.Errorf("open keys: %w", err))
	}
	defer keys.Close()
	ca, err := openDevCA(ctx, cfg, keys)
	if err != nil {
		return failure(err)
	}
	now := time.Now()
	label, key, err := newKey(ctx, keys, t, now)
	if err != nil {
		return err
	}
	cert, err := issueDev(ca, t, key.Public(), now)
	if err != nil {
		return failure(err)
	}
	chain := append([]*x509.Certificate{cert}, ca.Cert)
	if err := checkKeyCert(t, key, chain, now); err != nil {
		return failure(fmt.Errorf("the new certificate: %w", err))
	}
	// The CA's state first, as pec ca issue does: the CA knows every
	// certificate it signed.
	err = devca.Update(cfg.DevCA.StateFile, func(s *devca.State) error {
		_, err := s.Add(cert, devCAName(t.kind), "", devca.Event{At: now, By: operatorName(), Evidence: evidence.NewID(now)})
		return err
	})
	if err != nil {
		return failure(fmt.Errorf("devca.state_file: %w", err))
	}
	gen, file, err := install(cfg, t, label, chain, "devca", now, false)
	if err != nil {
		return err
	}
	printRotated(out, cfg, t, gen, file, t.chain[0], cert)
	return nil
}

func newKeysCSRCommand() *cobra.Command {
	var configPath, out string
	cmd := &cobra.Command{
		Use:   "csr --config FILE (tsa | proof | signing PROFILE | tls) -o REQ.csr",
		Short: "Make a new key in the HSM and a PKCS#10 request for your CA",
		Long: `csr makes a new key of the same type in the HSM, labelled BASE.GEN, and writes REQ.csr: a PKCS#10
certificate request (RFC 2986, PEM) for it, signed by it in the HSM, with the subject (and, for tls,
the names) of the current certificate. The key waits in DATA_DIR/keys.json for its certificate: give
the CA's answer to pec keys install. A second csr replaces the pending key (which stays in the HSM,
unused).`,
		Args: args(cobra.ArbitraryArgs), // parseKeyArgs
		RunE: func(cmd *cobra.Command, a []string) error {
			kind, profile, _, err := parseKeyArgs(a, false)
			if err != nil {
				return err
			}
			if out == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("-o REQ.csr is required")}}
			}
			cfg, _, t, err := loadKeyTarget(configPath, kind, profile)
			if err != nil {
				return err
			}
			return keysCSR(cmd.Context(), cmd.OutOrStdout(), cfg, t, out)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the request to write (PEM)")
	return cmd
}

func keysCSR(ctx context.Context, out io.Writer, cfg *File, t *keyTarget, path string) error {
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{})
	if err != nil {
		return failure(fmt.Errorf("open keys: %w", err))
	}
	defer keys.Close()
	now := time.Now()
	label, key, err := newKey(ctx, keys, t, now)
	if err != nil {
		return err
	}
	old := t.chain[0]
	tmpl := &x509.CertificateRequest{Subject: old.Subject}
	if t.kind == "tls" {
		tmpl.DNSNames, tmpl.IPAddresses = old.DNSNames, old.IPAddresses
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return failure(fmt.Errorf("sign the request with the new key: %w", err))
	}
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644); err != nil {
		return failure(err)
	}
	sum := sha256.Sum256(der)
	var replaced string
	err = updateKeyState(cfg, func(st *keyState) error {
		for _, slot := range t.slots {
			s := st.Keys[slot]
			if s == nil {
				s = &keySlot{}
				st.Keys[slot] = s
			}
			if s.Pending != nil {
				replaced = s.Pending.Label
			}
			s.Pending = &pendingKey{Label: label, Created: now.UTC(), CSRSHA256: hex.EncodeToString(sum[:]), Profiles: t.profiles}
		}
		return nil
	})
	if err != nil {
		return failure(err)
	}
	fmt.Fprintf(out, "pec keys: new %s key %s, waiting for its certificate\n", t.kind, label)
	fmt.Fprintf(out, "  request: %s (subject %s)\n", path, old.Subject)
	if replaced != "" {
		fmt.Fprintf(out, "  replaces the pending key %s (left unused in the HSM)\n", replaced)
	}
	fmt.Fprintf(out, "  then: pec keys install --config %s %s CERT.pem\n", cfg.path, strings.Join(keyArgs(t), " "))
	return nil
}

// keyArgs are t's KIND [PROFILE] arguments.
func keyArgs(t *keyTarget) []string {
	if t.kind == "signing" {
		return []string{"signing", strings.TrimPrefix(t.slots[0], "signing/")}
	}
	return []string{t.kind}
}

func newKeysInstallCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "install --config FILE (tsa | proof | signing PROFILE | tls) CERT.pem",
		Short: "Install the CA's certificate of the key pec keys csr made",
		Long: `install checks CERT.pem (the certificate, then its chain; the current chain's CA certificates are
added when it holds the certificate alone): it must be the certificate of the key pending since pec
keys csr, chain to the root of the current certificate, and be fit for the key's use (tsa: a critical
timeStamping extended key usage; proof: the evidence-log one; tls: serverAuth; signing: a signing key
usage); then it writes it beside the first certificate and makes the pending key current in
DATA_DIR/keys.json. The running node takes it on SIGHUP.`,
		Args: args(cobra.ArbitraryArgs), // parseKeyArgs
		RunE: func(cmd *cobra.Command, a []string) error {
			kind, profile, file, err := parseKeyArgs(a, true)
			if err != nil {
				return err
			}
			cfg, st, t, err := loadKeyTarget(configPath, kind, profile)
			if err != nil {
				return err
			}
			chain, err := devpki.LoadCertsPEM(file)
			if err != nil || len(chain) == 0 {
				return inputError(fmt.Errorf("%s: no certificate (%v)", file, err))
			}
			return keysInstall(cmd.Context(), cmd.OutOrStdout(), cfg, st, t, chain)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	return cmd
}

func keysInstall(ctx context.Context, out io.Writer, cfg *File, st *keyState, t *keyTarget, chain []*x509.Certificate) error {
	s := st.Keys[t.slots[0]]
	if s == nil || s.Pending == nil {
		return usageError("%s: no key waits for a certificate: pec keys csr --config %s %s -o REQ.csr makes one", t.slots[0], cfg.path, strings.Join(keyArgs(t), " "))
	}
	label := s.Pending.Label
	if len(chain) == 1 && len(t.chain) > 1 && chain[0].CheckSignatureFrom(t.chain[1]) == nil {
		chain = append(chain, t.chain[1:]...) // the CA answered with the certificate alone
	}
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{})
	if err != nil {
		return failure(fmt.Errorf("open keys: %w", err))
	}
	defer keys.Close()
	key, err := keys.Signer(ctx, label)
	if err != nil {
		return failure(fmt.Errorf("the pending key %s: %w", label, err))
	}
	now := time.Now()
	if !samePublic(key.Public(), chain[0].PublicKey) {
		return inputError(fmt.Errorf("the certificate %q is not that of the pending key %s (made by pec keys csr on %s)", chain[0].Subject, label, s.Pending.Created.Format(time.RFC3339)))
	}
	if err := checkKeyCert(t, key, chain, now); err != nil {
		return inputError(fmt.Errorf("the certificate cannot serve as the %s key's: %w", t.kind, err))
	}
	if err := checkSameRoot(t, chain, now); err != nil {
		return inputError(err)
	}
	gen, file, err := install(cfg, t, label, chain, "csr", now, true)
	if err != nil {
		return err
	}
	printRotated(out, cfg, t, gen, file, t.chain[0], chain[0])
	return nil
}

func newKeysListCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "list --config FILE",
		Short: "List the node's keys: the current generation of each, and those rotated out",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--config FILE is required")}}
			}
			cfg, err := LoadConfig(configPath)
			if err != nil {
				return inputError(err)
			}
			st, err := applyKeyState(cfg)
			if err != nil {
				return inputError(err)
			}
			out := cmd.OutOrStdout()
			for _, r := range cfg.keyRefs() {
				fp := "?"
				if chain, err := devpki.LoadCertsPEM(*r.cert); err == nil && len(chain) > 0 {
					fp = certSHA256(chain[0])
				}
				gens := 1
				if s := st.Keys[r.slot]; s != nil && len(s.Generations) > 0 {
					gens = len(s.Generations)
				}
				fmt.Fprintf(out, "%-16s %s  %s  sha256 %s  (generation %d)\n", r.slot, *r.label, cfg.relPath(*r.cert), fp, gens-1)
				if s := st.Keys[r.slot]; s != nil && s.Pending != nil {
					fmt.Fprintf(out, "%-16s pending %s since %s (pec keys install)\n", "", s.Pending.Label, s.Pending.Created.Format(time.RFC3339))
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	return cmd
}
