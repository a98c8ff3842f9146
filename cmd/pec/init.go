package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"pec/configs"
	"pec/hsm"
	"pec/internal/devca"
	"pec/internal/devpki"
	"pec/proof"
)

// softHSMModule is where Debian's softhsm2 package installs the module.
const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// devPolicyOID is the TSA policy of development nodes, under the ITU-T
// example arc (2.999, X.660): it must never appear in production tokens.
const devPolicyOID = "2.999.3161.1"

// devClients are the client certificates `pec init` issues (a contract:
// DIR/pki/clients/NAME.pem and NAME.key).
var devClients = []struct{ name, org, role string }{
	{"partner-a", "Partner A administration", "partner"},
	{"partner-b", "Partner B administration", "partner"},
	{"auditor", "PEC audit", "auditor"},
	{"admin", "PEC operations", "admin"},
}

// defaultCAURL is where the development CA's certificates say its CRL and
// OCSP responder are: the tsa listener of the generated pec.yaml.
const defaultCAURL = "http://127.0.0.1:8318"

func newInitCommand() *cobra.Command {
	var (
		opts    initOptions
		join    joinOptions
		listens []string
	)
	cmd := &cobra.Command{
		Use:   "init --dir DIR | init --join DIR --dir NEWDIR [--node-id N] [--listen NAME=HOST:PORT]...",
		Short: "Create a development node (PKI, HSM keys, a commented pec.yaml), or another node of a platform",
		Long: `init writes DIR/pec.yaml, a development root CA (DIR/pki/root-ca.pem), the TSA and
TLS certificates, and client certificates for partner-a, partner-b, auditor and admin
(DIR/pki/clients/NAME.pem and NAME.key). Keys of the node go into a SoftHSM2 token under
DIR/hsm when softhsm2 is installed, into PKCS#8 files under DIR/keys otherwise. The token's
PIN is in DIR/hsm/pin (mode 0600). A directory that already holds pec.yaml is left as it is.

With --join DIR, init makes NEWDIR another node of DIR's platform, whose evidence log must be
on PostgreSQL (proof.postgres_url_env): NEWDIR/pec.yaml is DIR's with its own tsa.node_id (the
next free one of the platform's list of nodes, or --node-id), data directory and listen
addresses (DIR's ports plus 10 per node id, or --listen), and no devca section (the
development CA stays DIR's). The certificates of DIR/pki are copied; the keys are shared: the
same PKCS#11 token (for SoftHSM2, the token directory of DIR's softhsm2.conf), or copies of
software keys. The ids handed out are listed in the first node's directory (DIR/nodes).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.dir == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--dir is required")}}
			}
			if join.from != "" || cmd.Flags().Changed("node-id") || len(listens) > 0 {
				return runJoin(cmd, opts, join, listens)
			}
			if err := initNode(cmd.Context(), opts, cmd.OutOrStdout()); err != nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.dir, "dir", "", "directory of the new node")
	cmd.Flags().StringVar(&opts.module, "module", "", "PKCS#11 module for a new SoftHSM2 token (default: "+softHSMModule+" when installed)")
	cmd.Flags().BoolVar(&opts.softwareKeys, "software-keys", false, "keep keys in PKCS#8 files even when SoftHSM2 is installed")
	cmd.Flags().StringVar(&opts.caURL, "ca-url", defaultCAURL, "http://HOST:PORT of the tsa listener, where the certificates say the CRL and OCSP responder of the development CA are")
	cmd.Flags().StringVar(&join.from, "join", "", "make --dir another node of the platform of this node's directory")
	cmd.Flags().IntVar(&join.nodeID, "node-id", -1, "with --join: the new node's tsa.node_id (default: the next free one)")
	cmd.Flags().StringArrayVar(&listens, "listen", nil, "with --join: NAME=HOST:PORT, the new node's address of service NAME (tsa, api, ops, web, smtp)")
	return cmd
}

// runJoin checks the flags of init --join and runs it (join.go).
func runJoin(cmd *cobra.Command, opts initOptions, join joinOptions, listens []string) error {
	mistake := func(format string, args ...any) error {
		return &exitError{code: exitUsage, err: usageMistake{fmt.Errorf(format, args...)}}
	}
	if join.from == "" {
		return mistake("--node-id and --listen go with --join DIR")
	}
	for _, f := range []string{"module", "software-keys", "ca-url"} {
		if cmd.Flags().Changed(f) {
			return mistake("--%s does not go with --join: the new node takes the keys and the CA of %s", f, join.from)
		}
	}
	if cmd.Flags().Changed("node-id") && (join.nodeID < 0 || join.nodeID > 0xffff) {
		return mistake("--node-id %d: not within 0-65535", join.nodeID)
	}
	var err error
	if join.listens, err = parseListens(listens); err != nil {
		return err
	}
	join.dir = opts.dir
	return joinNode(cmd.Context(), join, cmd.OutOrStdout())
}

type initOptions struct {
	dir          string
	module       string
	softwareKeys bool
	caURL        string // "": defaultCAURL
}

// initNode creates the node. It refuses a directory that holds a pec.yaml and
// removes what it created when it fails half-way.
func initNode(ctx context.Context, opts initOptions, out io.Writer) (err error) {
	dir, err := filepath.Abs(opts.dir)
	if err != nil {
		return inputError(err)
	}
	cfgPath := filepath.Join(dir, "pec.yaml")
	if _, err := os.Stat(cfgPath); err == nil {
		return usageError("%s already exists: init changes nothing in a configured directory", cfgPath)
	}
	created, err := makeDirs(dir, "pki/clients", "data", "samples")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.RemoveAll(created[i])
			}
		}
	}()

	caURL := cmpOr(opts.caURL, defaultCAURL)
	if err := (devca.Config{URL: caURL, StateFile: "-", KeyLabel: "-", CertFile: "-"}).Validate(); err != nil {
		return usageError("--ca-url: %v", err)
	}
	params := configs.Params{Dev: true, PolicyOID: devPolicyOID, DevCAURL: caURL}
	var hcfg hsm.Config
	module := opts.module
	if module == "" && !opts.softwareKeys {
		if _, err := os.Stat(softHSMModule); err == nil {
			module = softHSMModule
		}
	}
	if module != "" && !opts.softwareKeys {
		hcfg, err = initSoftHSMToken(dir, module)
		if err != nil {
			return err
		}
		params.Module, params.TokenLabel = hcfg.Module, hcfg.TokenLabel
		params.PINFile, params.SoftHSM2Conf = "hsm/pin", "hsm/softhsm2.conf"
	} else {
		hcfg = hsm.Config{KeyDir: filepath.Join(dir, "keys")}
		if err := os.MkdirAll(hcfg.KeyDir, 0o700); err != nil {
			return err
		}
		params.KeyDir = "keys"
	}

	keys, err := hsm.Open(ctx, hcfg, hsm.Options{})
	if err != nil {
		return fmt.Errorf("open keys: %w", err)
	}
	defer keys.Close()
	if err := issueDevPKI(ctx, dir, keys, caURL, time.Now()); err != nil {
		return err
	}

	rendered, err := configs.Render(params)
	if err != nil {
		return err
	}
	if err := writeFile(cfgPath, rendered, 0o644); err != nil {
		return err
	}
	samples, err := writeSamples(dir)
	if err != nil {
		return err
	}
	nss := makeNSSDB(ctx, dir)
	where := "software keys in " + hcfg.KeyDir
	if hcfg.Module != "" {
		where = fmt.Sprintf("SoftHSM2 token %q (PIN in %s)", hcfg.TokenLabel, hcfg.PINFile)
	}
	fmt.Fprintf(out, "pec init: wrote %s\n  keys: %s\n  root CA: %s\n  client certificates: %s/{partner-a,partner-b,auditor,admin}.{pem,key}\n  sample documents: %s\n  %s\n",
		cfgPath, where, filepath.Join(dir, "pki", "root-ca.pem"), filepath.Join(dir, "pki", "clients"), samples, nss)
	return nil
}

// writeSamples writes the documents the README's quick start signs:
// DIR/samples/doc.pdf and doc.txt. It returns what to print.
func writeSamples(dir string) (string, error) {
	samples := filepath.Join(dir, "samples")
	if err := writeFile(filepath.Join(samples, "doc.pdf"), samplePDF(), 0o644); err != nil {
		return "", err
	}
	if err := writeFile(filepath.Join(samples, "doc.txt"), []byte(sampleText), 0o644); err != nil {
		return "", err
	}
	return filepath.Join(samples, "{doc.pdf,doc.txt}"), nil
}

// sampleText is the text of the sample documents.
const sampleText = "Extrait de casier judiciaire - bulletin 3\n" +
	"A sample tele-dossier of the PEC development node: sign it, time-stamp it.\n"

// samplePDF is a one-page PDF 1.7 document (ISO 32000-1 §7.5: header,
// body, cross-reference table, trailer) holding sampleText, its xref
// offsets computed as it is written. No dates and no IDs: the same bytes
// at every init.
func samplePDF() []byte {
	var text strings.Builder
	text.WriteString("BT /F1 14 Tf 72 770 Td 18 TL\n")
	for line := range strings.Lines(sampleText) {
		// A PDF literal string: backslash and parentheses escaped.
		esc := strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(strings.TrimSuffix(line, "\n"))
		text.WriteString("(" + esc + ") Tj T*\n")
	}
	text.WriteString("ET\n")
	objects := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", text.Len(), text.String()),
		"<< /Title (PEC sample document) /Producer (pec init) >>",
	}
	var b strings.Builder
	// The comment of bytes above 127 marks the file as binary (§7.5.2).
	b.WriteString("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
	offsets := make([]int, len(objects))
	for i, o := range objects {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	// Each entry is exactly 20 bytes, its end of line " \n" (§7.5.4).
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objects)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objects)+1, len(objects), xref)
	return []byte(b.String())
}

// makeNSSDB makes DIR/nssdb, an NSS database trusting the development root
// CA, so that pdfsig -nssdir sql:DIR/nssdb reports the node's PAdES
// signatures trusted; it needs certutil (Debian: libnss3-tools). Without
// it, or when it fails, init goes on and the line it returns says how to
// make one.
func makeNSSDB(ctx context.Context, dir string) string {
	db := filepath.Join(dir, "nssdb")
	root := filepath.Join(dir, "pki", "root-ca.pem")
	how := fmt.Sprintf("certutil -N -d sql:%s --empty-password && certutil -A -d sql:%s -n 'PEC development root CA' -t CT,C,C -i %s", db, db, root)
	certutil, err := exec.LookPath("certutil")
	if err != nil {
		return "NSS database for pdfsig: not made, certutil is missing (apt-get install libnss3-tools, then: " + how + ")"
	}
	if err := os.MkdirAll(db, 0o755); err != nil {
		return fmt.Sprintf("NSS database for pdfsig: not made (%v); make it with: %s", err, how)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + db, "--empty-password"},
		{"-A", "-d", "sql:" + db, "-n", "PEC development root CA", "-t", "CT,C,C", "-i", root},
	} {
		if msg, err := exec.CommandContext(ctx, certutil, args...).CombinedOutput(); err != nil {
			_ = os.RemoveAll(db)
			return fmt.Sprintf("NSS database for pdfsig: not made (certutil %s: %v: %s); make it with: %s",
				args[0], err, oneLine(strings.TrimSpace(string(msg))), how)
		}
	}
	return fmt.Sprintf("NSS database for pdfsig, trusting the root CA: %s (pdfsig -nssdir sql:%s FILE.pdf)", db, db)
}

// initSoftHSMToken creates a SoftHSM2 token store under DIR/hsm, with a
// configuration file of its own, a new token and random PINs kept in files
// of mode 0600.
func initSoftHSMToken(dir, module string) (hsm.Config, error) {
	hsmDir := filepath.Join(dir, "hsm")
	tokens := filepath.Join(hsmDir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return hsm.Config{}, err
	}
	conf := filepath.Join(hsmDir, "softhsm2.conf")
	confText := "# SoftHSM2 configuration of this PEC development node.\n" +
		"directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
	if err := writeFile(conf, []byte(confText), 0o600); err != nil {
		return hsm.Config{}, err
	}
	userPIN, soPIN := randomPIN(), randomPIN()
	cfg := hsm.Config{
		Module:       module,
		TokenLabel:   "pec-dev",
		PINFile:      filepath.Join(hsmDir, "pin"),
		SoftHSM2Conf: conf,
	}
	if err := writeFile(cfg.PINFile, []byte(userPIN+"\n"), 0o600); err != nil {
		return hsm.Config{}, err
	}
	if err := writeFile(filepath.Join(hsmDir, "so-pin"), []byte(soPIN+"\n"), 0o600); err != nil {
		return hsm.Config{}, err
	}
	// SoftHSM2 reads SOFTHSM2_CONF when the module is initialised.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return hsm.Config{}, err
	}
	if _, err := hsm.InitToken(module, cfg.TokenLabel, soPIN, userPIN); err != nil {
		return hsm.Config{}, fmt.Errorf("create SoftHSM2 token: %w", err)
	}
	return cfg, nil
}

// issueDevPKI generates the node's keys and writes the development PKI.
// Every certificate is listed in the development CA's state file
// (pki/ca-state.json); the clients' name its CRL and OCSP responder under
// caURL.
func issueDevPKI(ctx context.Context, dir string, keys hsm.KeyStore, caURL string, now time.Time) error {
	pki := filepath.Join(dir, "pki")
	rootKey, err := keys.GenerateKey(ctx, "root-ca", hsm.ECP384)
	if err != nil {
		return fmt.Errorf("generate root CA key: %w", err)
	}
	ca, err := devpki.NewRootCA(rootKey, "PEC development root CA", now)
	if err != nil {
		return err
	}
	type issuedCert struct {
		name, role string
		cert       *x509.Certificate
	}
	var issued []issuedCert
	if err := writeFile(filepath.Join(pki, "root-ca.pem"), devpki.CertPEM(ca.Cert), 0o644); err != nil {
		return err
	}

	tsaKey, err := keys.GenerateKey(ctx, "tsa", hsm.ECP256)
	if err != nil {
		return fmt.Errorf("generate TSA key: %w", err)
	}
	tsaCert, err := ca.IssueTSA(tsaKey.Public(), "PEC development TSA", now)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(pki, "tsa.pem"), devpki.CertPEM(tsaCert, ca.Cert), 0o644); err != nil {
		return err
	}
	issued = append(issued, issuedCert{"tsa", "", tsaCert})

	tlsKey, err := keys.GenerateKey(ctx, "tls-server", hsm.ECP256)
	if err != nil {
		return fmt.Errorf("generate TLS key: %w", err)
	}
	serverCert, err := ca.IssueServer(tlsKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, now)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(pki, "server.pem"), devpki.CertPEM(serverCert, ca.Cert), 0o644); err != nil {
		return err
	}
	issued = append(issued, issuedCert{"server", "", serverCert})

	proofKey, err := keys.GenerateKey(ctx, "proof", hsm.ECP256)
	if err != nil {
		return fmt.Errorf("generate evidence log key: %w", err)
	}
	proofCert, err := ca.Issue(&x509.Certificate{
		Subject:   pkix.Name{CommonName: "PEC development evidence log", Organization: []string{"PEC development"}},
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(devpki.LeafValidity),
		KeyUsage:  x509.KeyUsageDigitalSignature,
		// The evidence log's checkpoint key, and nothing else.
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, proofKey.Public())
	if err != nil {
		return fmt.Errorf("evidence log certificate: %w", err)
	}
	if err := writeFile(filepath.Join(pki, "proof.pem"), devpki.CertPEM(proofCert, ca.Cert), 0o644); err != nil {
		return err
	}
	issued = append(issued, issuedCert{"proof", "", proofCert})

	// The key of the signature profiles default (CAdES B-T), cades-bb (CAdES
	// B-B) and pdf (PAdES).
	signingKey, err := keys.GenerateKey(ctx, "signing", hsm.ECP256)
	if err != nil {
		return fmt.Errorf("generate signature key: %w", err)
	}
	signingCert, err := ca.IssueDocumentSigner(signingKey.Public(), "PEC development signature", "PEC development", now)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(pki, "signing.pem"), devpki.CertPEM(signingCert, ca.Cert), 0o644); err != nil {
		return err
	}
	issued = append(issued, issuedCert{"signing", "", signingCert})

	// Client certificates name the development CA's CRL and OCSP
	// responder: revoking a partner is what they are for. The node's own
	// certificates above go into proof bundles and signatures that must
	// verify offline, long after, where a certificate naming a responder
	// needs its revocation data in the bundle (proof refuses it otherwise):
	// they name none, and a compromised node key is rotated, not revoked.
	dc := devca.Config{URL: caURL}
	ca.Revocation = devpki.RevocationURLs{CRL: dc.CRLURL(), OCSP: dc.OCSPURL()}
	// Client keys belong to the clients, not to the platform: files they
	// take away, never HSM objects of the node.
	for _, c := range devClients {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		cert, err := ca.IssueClient(key.Public(), c.name, c.org, now)
		if err != nil {
			return err
		}
		keyPEM, err := devpki.KeyPEM(key)
		if err != nil {
			return err
		}
		base := filepath.Join(pki, "clients", c.name)
		if err := writeFile(base+".key", keyPEM, 0o600); err != nil {
			return err
		}
		if err := writeFile(base+".pem", devpki.CertPEM(cert), 0o644); err != nil {
			return err
		}
		issued = append(issued, issuedCert{c.name, c.role, cert})
		if strings.HasPrefix(c.name, "partner-") {
			if err := issueEncryption(ca, base, c.name, c.org, now); err != nil {
				return err
			}
		}
	}
	// No evidence ids: the node's own certificates, made before any log.
	return devca.Update(filepath.Join(pki, "ca-state.json"), func(s *devca.State) error {
		for _, ic := range issued {
			if _, err := s.Add(ic.cert, ic.name, ic.role, devca.Event{At: now, By: "pec init"}); err != nil {
				return err
			}
		}
		return nil
	})
}

// issueEncryption writes a partner's encryption key and certificate
// (NAME-encryption.key, NAME-encryption.pem): the dossiers sent to it are
// encrypted for this certificate, which the directory names; its key
// stays with the partner (`pec exchange fetch` decrypts with it).
func issueEncryption(ca *devpki.CA, base, name, org string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert, err := ca.IssueEncryption(key.Public(), name, org, now)
	if err != nil {
		return err
	}
	keyPEM, err := devpki.KeyPEM(key)
	if err != nil {
		return err
	}
	if err := writeFile(base+"-encryption.key", keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(base+"-encryption.pem", devpki.CertPEM(cert), 0o644)
}

// makeDirs creates dir and its subdirectories (mode 0700) and returns the
// directories it created, outermost first.
func makeDirs(dir string, subs ...string) ([]string, error) {
	var created []string
	for _, d := range append([]string{dir}, subs...) {
		p := d
		if d != dir {
			p = filepath.Join(dir, d)
		}
		// Record each missing ancestor so a failure removes only what we made.
		var missing []string
		for q := p; ; q = filepath.Dir(q) {
			if _, err := os.Stat(q); err == nil || !errors.Is(err, fs.ErrNotExist) {
				break
			}
			missing = append([]string{q}, missing...)
			if q == filepath.Dir(q) {
				break
			}
		}
		if err := os.MkdirAll(p, 0o700); err != nil {
			return created, err
		}
		created = append(created, missing...)
	}
	return created, nil
}

// writeFile writes data atomically: a temporary file renamed into place.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// randomPIN is 26 base32 characters (130 bits), within SoftHSM2's PIN
// length limit of 255.
func randomPIN() string { return rand.Text() }
