package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"pec/gateway/api"
	"pec/internal/cms"
	"pec/middleoffice"
	"pec/signing"
)

// The exchange commands are a partner's client of the exchange API
// (/v1/exchanges, /v1/inbox), over mutual TLS with the partner's client
// certificate: an administration sends and receives tele-dossiers
// without writing code.

func newExchangeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exchange send|inbox|fetch|ack|status|proof",
		Short: "Send and receive tele-dossiers through a node's API (a partner's certificate)",
		Long: `exchange sends tele-dossiers to another partner and receives those sent to this one, through a
running node's exchange API over mutual TLS with the partner's client certificate (--api, --cert, --key,
--roots on every subcommand). Every step is an evidence record of the node's log. Exit status: 0 done,
1 the platform refused (the reason, and the evidence of the refusal, on stderr) or failed, 2 usage or
input error.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("a subcommand is required: send, inbox, fetch, ack, status, proof")}}
		},
	}
	cmd.AddCommand(newExchangeSendCommand(), newExchangeInboxCommand(), newExchangeFetchCommand(),
		newExchangeAckCommand(), newExchangeStatusCommand(), newExchangeProofCommand())
	return cmd
}

// partnerFlags are apiFlags described for a partner's certificate.
func partnerFlags(cmd *cobra.Command, f *apiFlags) {
	f.register(cmd)
	cmd.Flags().Lookup("cert").Usage = "the partner's client certificate (PEM)"
}

// exchangeError gives an API error its exit status: a refusal the node
// recorded as evidence (a problem naming its record) is the platform's
// refusal, 1, with the record named; otherwise as apiError.
func exchangeError(err error) error {
	if e, ok := errors.AsType[*api.Error](err); ok && e.Problem.EvidenceID != "" {
		return failure(fmt.Errorf("%w (refusal recorded as evidence %s)", e, e.Problem.EvidenceID))
	}
	return apiError(err)
}

func newExchangeSendCommand() *cobra.Command {
	var (
		conn                          apiFlags
		to, procedure, subject, ref   string
		docType, key, receipt, mtFlag string
		retries                       int
		sign                          bool
		uploadAbove, chunk            int64
	)
	cmd := &cobra.Command{
		Use:   "send --api URL --cert C.pem --key C.key [--roots ROOT.pem] --to PARTNER --procedure P FILE...",
		Short: "Send a tele-dossier: print its exchange id, save the acknowledgment of receipt",
		Long: `send submits FILE... as one tele-dossier to the partner --to, for the procedure --procedure: it
hashes each file, declares its name, size, SHA-256 and media type (from its extension, or --media-type)
in the manifest, and streams the files after it. The node checks the routing rules, the sizes and the
digests, encrypts the documents for the recipient and answers at once with the acknowledgment of
receipt: send prints the exchange id on stdout and, with --receipt FILE, saves the receipt (a CMS
signature of the platform over the submission's evidence record: openssl cms -verify checks it).
A submission that fails on the way (the node unavailable, a lost connection) is sent again, up to
--retries times, with the same idempotency key: the node never makes two exchanges of it.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, files []string) error {
			if to == "" || procedure == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--to PARTNER and --procedure P are required")}}
			}
			c, err := conn.client()
			if err != nil {
				return err
			}
			m := middleoffice.Manifest{Recipient: to, Procedure: procedure, Subject: subject, Reference: ref}
			for _, f := range files {
				d, err := describeFile(f, mtFlag)
				if err != nil {
					return inputError(err)
				}
				d.Type = docType
				m.Documents = append(m.Documents, d)
			}
			if sign {
				if err := signDocuments(cmd.Context(), conn, m.Documents); err != nil {
					return err
				}
			}
			if err := m.Validate(); err != nil {
				return inputError(err)
			}
			if key == "" {
				key = randomKey()
			}
			// Large files go first as resumable uploads, so that a cut
			// connection costs a chunk, not the whole dossier.
			for i, f := range files {
				if m.Documents[i].Size > uploadAbove {
					id, err := uploadFile(cmd.Context(), c, f, m.Documents[i], chunk, retries, cmd.ErrOrStderr())
					if err != nil {
						return exchangeError(err)
					}
					m.Documents[i].Upload = id
				}
			}
			s, err := submitWithRetries(cmd.Context(), c, m, key, files, retries, cmd.ErrOrStderr())
			if err != nil {
				return exchangeError(err)
			}
			if receipt != "" {
				if err := writeFile(receipt, s.Receipt, 0o644); err != nil {
					return failure(fmt.Errorf("exchange %s accepted, but the receipt cannot be saved: %w", s.Exchange, err))
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), s.Exchange)
			return nil
		},
	}
	partnerFlags(cmd, &conn)
	fl := cmd.Flags()
	fl.StringVar(&to, "to", "", "the recipient partner's id")
	fl.StringVar(&procedure, "procedure", "", "the procedure (a name of the routing rules)")
	fl.StringVar(&subject, "subject", "", "the dossier's subject, for people")
	fl.StringVar(&ref, "reference", "", "your own reference of the dossier")
	fl.StringVar(&docType, "type", "", "the document type of every file (routing rules may name document types)")
	fl.StringVar(&mtFlag, "media-type", "", "the media type of every file (default: from each file's extension)")
	fl.StringVar(&key, "idempotency-key", "", "the submission's idempotency key (default: a random one, kept across retries)")
	fl.StringVar(&receipt, "receipt", "", "save the acknowledgment of receipt (DER CMS) to FILE")
	fl.BoolVar(&sign, "sign", false, "sign each file with --cert and --key (a detached CMS signature, checked by the node, in the sealed manifest for the recipient)")
	fl.Int64Var(&uploadAbove, "upload-above", 64<<20, "send files larger than this many bytes as resumable uploads first")
	fl.Int64Var(&chunk, "chunk-size", 16<<20, "bytes per request of a resumable upload")
	fl.IntVar(&retries, "retries", 3, "send again this many times when the node is unavailable or the connection fails")
	return cmd
}

// signDocuments adds to each document the partner's detached CMS
// signature of its content (signed over the SHA-256 already computed:
// the file is not read again).
func signDocuments(ctx context.Context, conn apiFlags, docs []middleoffice.Document) error {
	signer, err := partnerSigner(conn)
	if err != nil {
		return err
	}
	for i := range docs {
		sum, _ := hex.DecodeString(docs[i].SHA256)
		sig, err := signer.SignDigest(ctx, sum)
		if err != nil {
			return failure(fmt.Errorf("sign %s: %w", docs[i].Name, err))
		}
		docs[i].Signatures = append(docs[i].Signatures, sig.DER)
	}
	return nil
}

// partnerSigner signs with the partner's client certificate and key.
func partnerSigner(conn apiFlags) (*signing.Signer, error) {
	kp, err := tls.LoadX509KeyPair(conn.certFile, conn.keyFile)
	if err != nil {
		return nil, inputError(fmt.Errorf("client certificate: %w", err))
	}
	cert, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return nil, inputError(err)
	}
	key, ok := kp.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, inputError(errors.New("the key cannot sign"))
	}
	signer, err := signing.NewSigner(key, []*x509.Certificate{cert}, signing.SignerOptions{})
	if err != nil {
		return nil, inputError(fmt.Errorf("the partner's key: %w", err))
	}
	return signer, nil
}

// describeFile is the manifest's entry of a file: its name, size, SHA-256
// and media type.
func describeFile(path, mediaType string) (middleoffice.Document, error) {
	f, err := os.Open(path)
	if err != nil {
		return middleoffice.Document{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return middleoffice.Document{}, err
	}
	if !st.Mode().IsRegular() {
		return middleoffice.Document{}, fmt.Errorf("%s: not a regular file", path)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return middleoffice.Document{}, fmt.Errorf("%s: %w", path, err)
	}
	if mediaType == "" {
		mediaType = mime.TypeByExtension(strings.ToLower(filepath.Ext(path)))
		if mediaType == "" {
			mediaType = "application/octet-stream"
		}
	}
	// The parameters (charset=utf-8) are the reader's business, not the
	// manifest's.
	if mt, _, err := mime.ParseMediaType(mediaType); err == nil {
		mediaType = mt
	}
	return middleoffice.Document{Name: filepath.Base(path), MediaType: mediaType, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "pec-cli-" + hex.EncodeToString(b[:])
}

// submitWithRetries submits, and submits again with the same key when the
// node did not answer or answered 503: the key makes a retry return the
// first submission's exchange.
func submitWithRetries(ctx context.Context, c *api.Client, m middleoffice.Manifest, key string, files []string, retries int, stderr io.Writer) (*api.Submission, error) {
	for attempt := 0; ; attempt++ {
		s, err := submitFiles(ctx, c, m, key, files)
		if err == nil || attempt >= retries || ctx.Err() != nil || !retryable(err) {
			return s, err
		}
		wait := time.Duration(1<<attempt) * time.Second
		if e, ok := errors.AsType[*api.Error](err); ok && e.RetryAfter > wait {
			wait = e.RetryAfter
		}
		fmt.Fprintf(stderr, "pec exchange send: %v; sending again in %s (idempotency key %s)\n", err, wait, key)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// whileSealing calls f again while the node answers 503 with Retry-After
// (an exchange accepted a moment ago and not sealed yet, a node briefly
// unavailable), for at most 30 s.
func whileSealing[T any](ctx context.Context, f func() (T, error)) (T, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := f()
		e, ok := errors.AsType[*api.Error](err)
		if !ok || e.StatusCode != 503 || e.RetryAfter <= 0 || time.Now().Add(e.RetryAfter).After(deadline) {
			return v, err
		}
		wait := min(e.RetryAfter, 250*time.Millisecond)
		if e.Problem.Type != api.TypeNotSealed {
			wait = e.RetryAfter
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
	}
}

func retryable(err error) bool {
	if e, ok := errors.AsType[*api.Error](err); ok {
		return e.StatusCode == 503
	}
	var fileErr *os.PathError
	return !errors.As(err, &fileErr) // the transport failed, not our files
}

func submitFiles(ctx context.Context, c *api.Client, m middleoffice.Manifest, key string, files []string) (*api.Submission, error) {
	var uploads []api.Upload
	for i, path := range files {
		if m.Documents[i].Upload != "" {
			continue // uploaded beforehand
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, inputError(err)
		}
		defer f.Close()
		uploads = append(uploads, api.Upload{Name: m.Documents[i].Name, Content: f})
	}
	return c.Submit(ctx, m, key, uploads)
}

// uploadFile sends path as a resumable upload, chunk bytes per request;
// after a failed request it asks the node where the upload stands and
// goes on from there, up to retries times in a row.
func uploadFile(ctx context.Context, c *api.Client, path string, d middleoffice.Document, chunk int64, retries int, stderr io.Writer) (string, error) {
	if chunk <= 0 {
		return "", inputError(errors.New("--chunk-size: must be positive"))
	}
	f, err := os.Open(path)
	if err != nil {
		return "", inputError(err)
	}
	defer f.Close()
	up, err := c.CreateUpload(ctx, d.Size, d.SHA256)
	if err != nil {
		return "", err
	}
	failures := 0
	for up.Offset < up.Size {
		n := min(chunk, up.Size-up.Offset)
		next, err := c.AppendUpload(ctx, up.ID, up.Offset, io.NewSectionReader(f, up.Offset, n), n)
		if err == nil {
			up, failures = next, 0
			continue
		}
		if failures++; failures > retries || ctx.Err() != nil || !retryable(err) && !offsetMismatch(err) {
			return "", err
		}
		fmt.Fprintf(stderr, "pec exchange send: upload of %s: %v; resuming\n", d.Name, err)
		time.Sleep(time.Duration(failures) * time.Second)
		if up, err = c.UploadStatus(ctx, up.ID); err != nil {
			return "", err
		}
	}
	return up.ID, nil
}

func offsetMismatch(err error) bool {
	e, ok := errors.AsType[*api.Error](err)
	return ok && e.Problem.Type == api.TypeUploadOffset
}

func newExchangeInboxCommand() *cobra.Command {
	var (
		conn   apiFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "inbox --api URL --cert C.pem --key C.key [--roots ROOT.pem] [--json]",
		Short: "List the exchanges delivered to this partner and not acknowledged yet",
		Long: `inbox prints the exchanges waiting for this partner, oldest first, under a header: ID, FROM,
PROCEDURE, DOCUMENTS, BYTES, STATE (delivered, or retrieved once fetched), DELIVERED (UTC) and SUBJECT.
--json prints them as the API gives them: {"exchanges": [...]}.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := conn.client()
			if err != nil {
				return err
			}
			var all []middleoffice.Exchange
			after := ""
			for {
				page, err := c.Inbox(cmd.Context(), after, middleoffice.MaxInboxPage)
				if err != nil {
					return exchangeError(err)
				}
				all = append(all, page.Exchanges...)
				if page.Next == "" || len(page.Exchanges) == 0 {
					break
				}
				after = page.Next
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(api.Inbox{Exchanges: nonNil(all)})
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFROM\tPROCEDURE\tDOCUMENTS\tBYTES\tSTATE\tDELIVERED\tSUBJECT")
			for _, ex := range all {
				var size int64
				for _, d := range ex.Manifest.Documents {
					size += d.Size
				}
				delivered := ""
				for _, e := range ex.Events {
					if e.Type == "delivery.delivered" {
						delivered = e.Time.UTC().Format(time.RFC3339)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", ex.ID, ex.Sender, ex.Manifest.Procedure, len(ex.Manifest.Documents), size, ex.State, delivered, cell(ex.Manifest.Subject))
			}
			return tw.Flush()
		},
	}
	partnerFlags(cmd, &conn)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// cell keeps a subject on its table row.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func newExchangeFetchCommand() *cobra.Command {
	var (
		conn                 apiFlags
		dir, sealFile        string
		decryptCert, decrypt string
		force                bool
	)
	cmd := &cobra.Command{
		Use:   "fetch ID -o DIR --api URL --cert C.pem --key C.key [--roots ROOT.pem]",
		Short: "Fetch an exchange: check its seal, decrypt its documents into DIR under their names",
		Long: `fetch downloads exchange ID (the node records the retrieval), checks the platform's seal (its CMS
signature, chaining to --roots) and writes each document, decrypted, into DIR under its original name,
once its size and SHA-256 are those the sealed manifest declares; nothing of a document that does not
check is left in DIR. The decryption key is --decrypt-key with --decrypt-cert; by default the files
beside --cert and --key named NAME-encryption.pem and NAME-encryption.key (what pec init writes), else
--cert and --key themselves. --seal FILE keeps the seal (the proof of what was sent). Existing files
in DIR are not overwritten without --force. It prints the documents written, one per line.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if dir == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("-o DIR is required")}}
			}
			c, err := conn.client()
			if err != nil {
				return err
			}
			keys, err := decryptionKeys(conn, decryptCert, decrypt)
			if err != nil {
				return err
			}
			// The seal first (reading it records nothing): what the
			// documents are called, so that a file of DIR in the way is
			// told before the retrieval is recorded.
			seal, _, sm, err := fetchSeal(cmd.Context(), c, conn.roots, a[0])
			if err != nil {
				return err
			}
			for _, d := range sm.Manifest.Documents {
				if _, err := os.Stat(filepath.Join(dir, d.Name)); err == nil && !force {
					return inputError(fmt.Errorf("%s exists (--force overwrites it)", filepath.Join(dir, d.Name)))
				}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return inputError(err)
			}
			f := &fetcher{dir: dir, keys: keys, force: force, out: cmd.OutOrStdout(), seal: seal, manifest: sm}
			if _, err := whileSealing(cmd.Context(), func() (string, error) { return c.Delivery(cmd.Context(), a[0], f.part) }); err != nil {
				f.cleanup()
				if _, ok := errors.AsType[*exitError](err); ok {
					return err
				}
				return exchangeError(err)
			}
			if !f.sealed {
				return failure(errors.New("the delivery holds no seal"))
			}
			if f.next != len(f.manifest.Manifest.Documents) {
				f.cleanup()
				return failure(fmt.Errorf("the delivery holds %d of the %d documents its seal declares", f.next, len(f.manifest.Manifest.Documents)))
			}
			if sealFile != "" {
				if err := writeFile(sealFile, f.seal, 0o644); err != nil {
					return failure(err)
				}
			}
			return nil
		},
	}
	partnerFlags(cmd, &conn)
	fl := cmd.Flags()
	fl.StringVarP(&dir, "output", "o", "", "directory for the decrypted documents")
	fl.StringVar(&sealFile, "seal", "", "save the platform's seal (DER CMS, the sealed manifest attached) to FILE")
	fl.StringVar(&decryptCert, "decrypt-cert", "", "the encryption certificate the documents are encrypted for (PEM)")
	fl.StringVar(&decrypt, "decrypt-key", "", "its private key (PEM)")
	fl.BoolVar(&force, "force", false, "overwrite files of DIR")
	return cmd
}

// decryptionKeys are the keys fetch tries, in order.
func decryptionKeys(conn apiFlags, certFile, keyFile string) ([]cms.RecipientKey, error) {
	type pair struct{ cert, key string }
	var candidates []pair
	switch {
	case certFile != "" || keyFile != "":
		if certFile == "" || keyFile == "" {
			return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--decrypt-cert and --decrypt-key go together")}}
		}
		candidates = []pair{{certFile, keyFile}}
	default:
		cb, kb := strings.TrimSuffix(conn.certFile, ".pem"), strings.TrimSuffix(conn.keyFile, ".key")
		if _, err := os.Stat(cb + "-encryption.pem"); err == nil {
			candidates = append(candidates, pair{cb + "-encryption.pem", kb + "-encryption.key"})
		}
		candidates = append(candidates, pair{conn.certFile, conn.keyFile})
	}
	var keys []cms.RecipientKey
	for _, p := range candidates {
		kp, err := tls.LoadX509KeyPair(p.cert, p.key)
		if err != nil {
			return nil, inputError(fmt.Errorf("decryption key %s: %w", p.key, err))
		}
		cert, err := x509.ParseCertificate(kp.Certificate[0])
		if err != nil {
			return nil, inputError(fmt.Errorf("decryption certificate %s: %w", p.cert, err))
		}
		keys = append(keys, cms.RecipientKey{Cert: cert, Key: kp.PrivateKey})
	}
	return keys, nil
}

// sealVerifier checks the platform's seals against roots (none: the
// system's).
func sealVerifier(roots []string) (*signing.Verifier, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || len(roots) > 0 {
		pool = x509.NewCertPool()
	}
	if err := addPEMFiles(pool, roots); err != nil {
		return nil, err
	}
	return &signing.Verifier{Chain: signing.X509Validator{Roots: pool}, TSARoots: pool}, nil
}

// fetcher writes a delivery's documents as its parts come: the seal
// first, checked, then each envelope, decrypted and checked against the
// sealed manifest.
type fetcher struct {
	dir   string
	keys  []cms.RecipientKey
	force bool
	out   io.Writer

	// seal is the platform's seal, checked (fetchSeal) before the
	// delivery, and manifest the sealed manifest it holds; the delivery's
	// first part must be that seal.
	seal     []byte
	manifest middleoffice.SealedManifest
	sealed   bool
	next     int
	written  []string
}

func (f *fetcher) cleanup() {
	for _, p := range f.written {
		_ = os.Remove(p)
	}
}

func (f *fetcher) part(p api.DeliveryPart) error {
	if !f.sealed {
		return f.readSeal(p.Content)
	}
	docs := f.manifest.Manifest.Documents
	if f.next >= len(docs) {
		return failure(errors.New("the delivery holds more documents than its seal declares"))
	}
	d := docs[f.next]
	f.next++
	if filepath.Base(d.Name) != d.Name || d.Name == "." || d.Name == ".." {
		return failure(fmt.Errorf("the sealed manifest names a document %q that is not a plain file name", d.Name))
	}
	// The envelope is read twice (its tag checked before anything is
	// written): kept in a temporary file, never in memory.
	env, err := os.CreateTemp(f.dir, ".pec-envelope-*")
	if err != nil {
		return failure(err)
	}
	defer func() { env.Close(); os.Remove(env.Name()) }()
	size, err := io.Copy(env, p.Content)
	if err != nil {
		return failure(fmt.Errorf("download %s: %w", d.Name, err))
	}
	target := filepath.Join(f.dir, d.Name)
	if _, err := os.Stat(target); err == nil && !f.force {
		return inputError(fmt.Errorf("%s exists (--force overwrites it)", target))
	}
	tmp, err := os.CreateTemp(f.dir, ".pec-document-*")
	if err != nil {
		return failure(err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	var derr error
	for _, k := range f.keys {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return failure(err)
		}
		_ = tmp.Truncate(0)
		h.Reset()
		_, derr = cms.DecryptTo(io.MultiWriter(tmp, h), env, size, k, nil)
		if !errors.Is(derr, cms.ErrNoRecipient) && !errors.Is(derr, cms.ErrUnsupported) {
			break
		}
	}
	if derr != nil {
		tmp.Close()
		return failure(fmt.Errorf("decrypt %s: %w (give the key it is encrypted for with --decrypt-cert and --decrypt-key)", d.Name, derr))
	}
	st, _ := tmp.Stat()
	if err := tmp.Close(); err != nil {
		return failure(err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != d.SHA256 || st.Size() != d.Size {
		return failure(fmt.Errorf("%s: decrypted, %d bytes of SHA-256 %s, but the seal declares %d bytes of %s: not kept", d.Name, st.Size(), sum, d.Size, d.SHA256))
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return failure(err)
	}
	f.written = append(f.written, target)
	fmt.Fprintln(f.out, target)
	return nil
}

func (f *fetcher) readSeal(r io.Reader) error {
	seal, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil {
		return failure(fmt.Errorf("download the seal: %w", err))
	}
	if !bytes.Equal(seal, f.seal) {
		return failure(errors.New("the delivery's seal is not the one the node gave before"))
	}
	f.sealed = true
	return nil
}

// fetchSeal reads exchange id's seal (waiting while it is being made),
// checks it against roots, and returns it with the sealed manifest's
// bytes and the manifest they hold.
func fetchSeal(ctx context.Context, c *api.Client, roots []string, id string) (seal, content []byte, sm middleoffice.SealedManifest, err error) {
	verifier, err := sealVerifier(roots)
	if err != nil {
		return nil, nil, sm, err
	}
	seal, err = whileSealing(ctx, func() ([]byte, error) { return c.Seal(ctx, id) })
	if err != nil {
		return nil, nil, sm, exchangeError(err)
	}
	if content, err = verifySeal(verifier, seal); err != nil {
		return nil, nil, sm, err
	}
	if err := json.Unmarshal(content, &sm); err != nil {
		return nil, nil, sm, failure(fmt.Errorf("the seal's content is not a sealed manifest: %w", err))
	}
	return seal, content, sm, nil
}

// verifySeal checks the platform's seal and returns the sealed manifest's
// bytes.
func verifySeal(v *signing.Verifier, seal []byte) ([]byte, error) {
	sd, err := cms.ParseSignedData(seal)
	if err != nil || !sd.Attached {
		return nil, failure(errors.New("the seal is not a CMS signature with its content attached"))
	}
	rep, err := v.Verify(context.Background(), seal, signing.VerifyOptions{})
	if err != nil {
		return nil, failure(fmt.Errorf("the seal cannot be verified: %w", err))
	}
	if !rep.Passed() {
		return nil, failure(fmt.Errorf("the seal does not verify (%s %s: %s): pass the root the platform's signing certificate chains to with --roots", rep.Indication, rep.SubIndication, rep.Detail))
	}
	return sd.Content, nil
}

func newExchangeAckCommand() *cobra.Command {
	var (
		conn   apiFlags
		reject string
	)
	cmd := &cobra.Command{
		Use:   "ack ID [--reject REASON] --api URL --cert C.pem --key C.key [--roots ROOT.pem]",
		Short: "Acknowledge an exchange (signed with the partner's key), or refuse it with a reason",
		Long: `ack signs the exchange's sealed manifest (the content of the platform's seal, checked first) with
the partner's key and certificate (--cert, --key: a CMS signature) and sends it as the recipient's
acknowledgment; with --reject REASON, the signed answer refuses the dossier for that reason. The
exchange leaves the inbox; the sender sees it in its status. It prints the evidence id of the answer.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := conn.client()
			if err != nil {
				return err
			}
			signer, err := partnerSigner(conn)
			if err != nil {
				return err
			}
			_, content, _, err := fetchSeal(cmd.Context(), c, conn.roots, a[0])
			if err != nil {
				return err
			}
			sig, err := signer.Sign(cmd.Context(), content, true)
			if err != nil {
				return failure(fmt.Errorf("sign the acknowledgment: %w", err))
			}
			ev, err := c.Ack(cmd.Context(), a[0], api.AckRequest{Signed: sig.DER, Reject: reject})
			if err != nil {
				return exchangeError(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), ev.EvidenceID)
			return nil
		},
	}
	partnerFlags(cmd, &conn)
	cmd.Flags().StringVar(&reject, "reject", "", "refuse the dossier for this reason instead of acknowledging it")
	return cmd
}

func newExchangeStatusCommand() *cobra.Command {
	var (
		conn   apiFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status ID --api URL --cert C.pem --key C.key [--roots ROOT.pem] [--json]",
		Short: "Show an exchange and every step, each with its evidence id",
		Long: `status prints exchange ID as its sender (or, once delivered, its recipient) sees it: its state, who
sent what to whom, and every step (TIME, EVENT, BY, EVIDENCE) — each evidence id's proof bundle is
GET /v1/proofs/ID (pec proof verify checks it offline). --json prints the API's answer.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := conn.client()
			if err != nil {
				return err
			}
			ex, err := c.Exchange(cmd.Context(), a[0])
			if err != nil {
				return exchangeError(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(ex)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "exchange\t%s\n", ex.ID)
			fmt.Fprintf(tw, "state\t%s\n", ex.State)
			fmt.Fprintf(tw, "from\t%s (%s)\n", ex.Sender, ex.SenderSubject)
			fmt.Fprintf(tw, "to\t%s (encrypted for %s)\n", ex.Recipient, ex.RecipientSubject)
			fmt.Fprintf(tw, "procedure\t%s\n", ex.Manifest.Procedure)
			if ex.Manifest.Subject != "" {
				fmt.Fprintf(tw, "subject\t%s\n", cell(ex.Manifest.Subject))
			}
			if ex.Manifest.Reference != "" {
				fmt.Fprintf(tw, "reference\t%s\n", ex.Manifest.Reference)
			}
			fmt.Fprintf(tw, "submitted\t%s\n", ex.SubmittedAt.UTC().Format(time.RFC3339))
			for i, d := range ex.Manifest.Documents {
				fmt.Fprintf(tw, "document %d\t%s (%s, %d bytes, sha256 %s)\n", i, d.Name, d.MediaType, d.Size, d.SHA256)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(out)
			tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tBY\tEVIDENCE\tDETAIL")
			for _, e := range ex.Events {
				by := e.By
				if by == "" {
					by = "platform"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Type, by, e.EvidenceID, cell(e.Detail))
			}
			return tw.Flush()
		},
	}
	partnerFlags(cmd, &conn)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}

func newExchangeProofCommand() *cobra.Command {
	var (
		conn apiFlags
		out  string
	)
	cmd := &cobra.Command{
		Use:   "proof ID -o BUNDLE --api URL --cert C.pem --key C.key [--roots ROOT.pem]",
		Short: "Save the proof bundle of every step of an exchange",
		Long: `proof saves one proof bundle holding the evidence records of every step of exchange ID (its
submission, delivery, retrieval, acknowledgment or refusal, failed attempts), their inclusion proofs in one
signed, time-stamped tree head and the certificates: pec proof verify checks it offline, pec proof show
prints it. The exchange's sender, its recipient once delivered, and auditors may read it; the read is
recorded (proof.read), its evidence id printed on stderr.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if out == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("-o BUNDLE is required")}}
			}
			c, err := conn.client()
			if err != nil {
				return err
			}
			bundle, readID, err := whileSealing2(cmd.Context(), func() ([]byte, string, error) { return c.ExchangeProof(cmd.Context(), a[0]) })
			if err != nil {
				return exchangeError(err)
			}
			if err := writeFile(out, bundle, 0o644); err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pec: wrote %s (the read is evidence %s)\n", out, readID)
			return nil
		},
	}
	partnerFlags(cmd, &conn)
	cmd.Flags().StringVarP(&out, "output", "o", "", "the bundle to write (a ZIP)")
	return cmd
}

func whileSealing2[T, U any](ctx context.Context, f func() (T, U, error)) (T, U, error) {
	type pair struct {
		t T
		u U
	}
	p, err := whileSealing(ctx, func() (pair, error) {
		t, u, err := f()
		return pair{t, u}, err
	})
	return p.t, p.u, err
}
