package main

// The exchange at the user's edge (-mode exchange): partner-a submits
// tele-dossiers to partner-b through POST /v1/exchanges over mutual TLS,
// with the typed client the CLI uses (api.Client.Submit: a multipart body
// streamed from the document's reader, one keep-alive connection per
// client), each with its own idempotency key as `pec exchange send` sends.
//
//   - acknowledged: the time from the submission's first byte to the 201
//     with the signed acknowledgment of receipt (the exchange and its
//     evidence durable);
//   - delivered: the time from the same first byte to the delivery.delivered
//     event of the exchange (sealed, in partner-b's inbox), read with
//     GET /v1/exchanges/{id} once the node's
//     pec_exchange_deliveries_total has caught up with its accepted
//     submissions, so that the reads do not slow the queue down.
//
// The documents are generated as they are sent (a random 64 KiB block,
// each block numbered), their SHA-256 computed before the step; nothing
// larger than a block is held by the client. Beside the table: the raw
// SHA-256 and AES-256-GCM throughput of the machine on one core and on
// every core, and the raw signing rate of the seal key, measured in the
// same run; the node's CPU profile at two steps, sorted into where the time
// goes; the node's RSS (/proc/PID/status) while one -big dossier goes
// through alone.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"pec/evidence"
	"pec/gateway/api"
	"pec/internal/cms"
	"pec/middleoffice"
)

// Metrics of the node read around each step.
const (
	metricAccepted   = `pec_exchange_submissions_total{outcome="accepted"}`
	metricDelivered  = `pec_exchange_deliveries_total{channel="pull",outcome="delivered"}`
	metricSignCount  = "pec_hsm_sign_seconds_count"
	metricSignSum    = "pec_hsm_sign_seconds_sum"
	metricAppends    = "pec_proof_appends_total"
	metricAckCount   = "pec_proof_ack_seconds_count"
	metricAckSum     = "pec_proof_ack_seconds_sum"
	metricBatchCount = "pec_proof_write_records_count"
	metricBatchSum   = "pec_proof_write_records_sum"
)

// oidSignatureTimeStamp is id-aa-signatureTimeStampToken (RFC 3161
// appendix A): the unsigned attribute that makes a CAdES signature B-T.
var oidSignatureTimeStamp = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 14}

// xrow is one line of the exchange table.
type xrow struct {
	seal        string // the seal profile, and B-B or B-T
	size        int64
	clients     int
	acks        float64 // acknowledged submissions per second
	ackP50      time.Duration
	ackP99      time.Duration
	delivered   float64 // exchanges delivered per second
	delP50      time.Duration
	delP99      time.Duration
	undelivered int
	nodeCPU     float64 // cores used by pec serve
	benchCPU    float64 // cores used by edgeload
	// exchangeCPU is the node's CPU time per exchange accepted in the step
	// (warm-up included), from its start until the queue delivered them
	// all: submission, seal and delivery, whatever the delivery's lag.
	exchangeCPU time.Duration
	rssMax      int64 // the node's largest VmRSS sampled, bytes
	anonMax     int64 // and RssAnon: without the mapped store file
	errors      int64
	// refused are the submissions the node answered 503 delivery-backlog
	// or overloaded: not errors; the client waited Retry-After and sent
	// the dossier again, as a partner's system does.
	refused int64
	node    nodeDeltas
	// For dossiers of 1 MiB and more: the reference (SHA-256 then
	// AES-256-GCM on one core) measured just before and just after the
	// step, per second of wall time and of CPU time; and the bytes
	// acknowledged per second of the node's CPU time.
	ref, refCPU, perNodeCPU float64
}

// nodeDeltas are what the node's metrics say of one step, per accepted
// submission.
type nodeDeltas struct {
	accepted         float64
	signs, signMean  float64 // HSM signatures per exchange, mean ms
	appends, ackMean float64 // evidence records per exchange, mean ms to durable
	recordsPerWrite  float64 // group commit
}

// crypto references, bytes per second.
type rawCrypto struct {
	sha1, shaAll, gcm1, gcmAll float64
	sha1CPU, gcm1CPU           float64 // per second of CPU time
}

// ref is the time for SHA-256 then AES-256-GCM of the bytes, serially, on
// one core: the reference of issue 10's 100 MiB target.
func (r rawCrypto) ref() float64 { return serial(r.sha1, r.gcm1) }

// refCPU is the same per second of CPU time.
func (r rawCrypto) refCPU() float64 { return serial(r.sha1CPU, r.gcm1CPU) }

func serial(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return 1 / (1/a + 1/b)
}

func runExchange(ctx context.Context, o options) error {
	work, pec, cleanup, err := setup(ctx, o)
	if err != nil {
		return err
	}
	defer cleanup()
	began := time.Now()
	load0 := loadAverage()

	raw, err := measureCrypto(o.rawDuration)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "edgeload: raw SHA-256 %s MB/s on one core, %s on %d; AES-256-GCM %s MB/s, %s; SHA-256 then AES-GCM on one core %s MB/s\n",
		mbps(raw.sha1), mbps(raw.shaAll), runtime.GOMAXPROCS(0), mbps(raw.gcm1), mbps(raw.gcmAll), mbps(raw.ref()))

	var all []xrow
	var notes []string
	for _, kind := range o.keys {
		rows, kindNotes, err := exchangeKind(ctx, o, pec, filepath.Join(work, kind), kind, raw)
		all = append(all, rows...)
		notes = append(notes, kindNotes...)
		if err != nil {
			printExchangeTable(os.Stdout, all, raw)
			return fmt.Errorf("%s keys: %w", kind, err)
		}
	}
	raw2, err := measureCrypto(o.rawDuration)
	if err != nil {
		return err
	}
	fmt.Printf("edgeload -mode exchange %s: `pec serve` (dev config, evidence on) over loopback, %d CPUs, GOMAXPROCS %d here, %s, %s a step after %s warm-up; load average %s at the start, %s at the end; %s in all\n\n",
		began.UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(),
		o.duration, o.warmup, load0, loadAverage(), time.Since(began).Round(time.Second))
	fmt.Printf("raw, before the nodes → after: SHA-256 %s → %s MB/s on one core, %s → %s on %d; AES-256-GCM %s → %s MB/s on one core, %s → %s on %d; reference (SHA-256 then AES-256-GCM, one core) %s → %s MB/s\n\n",
		mbps(raw.sha1), mbps(raw2.sha1), mbps(raw.shaAll), mbps(raw2.shaAll), runtime.GOMAXPROCS(0),
		mbps(raw.gcm1), mbps(raw2.gcm1), mbps(raw.gcmAll), mbps(raw2.gcmAll), runtime.GOMAXPROCS(0), mbps(raw.ref()), mbps(raw2.ref()))
	printExchangeTable(os.Stdout, all, raw)
	fmt.Println()
	for _, n := range notes {
		fmt.Println(n)
	}
	return nil
}

// exchangeKind makes one node with keys of kind and runs the steps, for
// each seal profile.
func exchangeKind(ctx context.Context, o options, pec, dir, kind string, raw rawCrypto) ([]xrow, []string, error) {
	nodeDir := filepath.Join(dir, "node")
	args := []string{"init", "--dir", nodeDir}
	if kind == "software" {
		args = append(args, "--software-keys")
	} else if _, err := os.Stat(softHSMModule); err != nil {
		return nil, nil, fmt.Errorf("%w: install SoftHSM2 (apt-get install softhsm2)", err)
	}
	if out, err := exec.CommandContext(ctx, pec, args...).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("pec %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	cfgPath := filepath.Join(nodeDir, "pec.yaml")
	cfg, err := loadNodeConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	tlsCfg, err := newClientTLS(nodeDir)
	if err != nil {
		return nil, nil, err
	}
	if o.workers > 0 {
		if err := editConfig(cfgPath, workersLine, strconv.Itoa(o.workers)); err != nil {
			return nil, nil, err
		}
	}

	var rows []xrow
	var notes []string
	for si, seal := range o.seals {
		p, ok := cfg.profile(seal)
		if !ok || p.Format != "cades" {
			return rows, notes, fmt.Errorf("%s: no CAdES profile %q to seal with", cfgPath, seal)
		}
		if err := setSealProfile(cfgPath, seal); err != nil {
			return rows, notes, err
		}
		rate := func() (float64, error) {
			if kind == "software" {
				return rawSoftware(cfg.path(filepath.Join(cfg.HSM.KeyDir, p.KeyLabel+".key")), o.rawDuration)
			}
			return rawPKCS11(cfg, p.KeyLabel, o.rawDuration)
		}
		rawSig, err := rate()
		if err != nil {
			return rows, notes, fmt.Errorf("raw rate of key %q: %w", p.KeyLabel, err)
		}
		level := "B-B"
		if p.Timestamp {
			level = "B-T"
		}
		label := fmt.Sprintf("%s (%s, %s)", seal, level, keyName(kind, cfg.path(p.CertFile)))
		fmt.Fprintf(os.Stderr, "edgeload: seal profile %s: key %q raw %s signatures/s on all cores\n", label, p.KeyLabel, thousands(rawSig))
		notes = append(notes, fmt.Sprintf("raw signatures/s of the seal key %q (%s) on all cores, before the node started: %s", p.KeyLabel, keyName(kind, cfg.path(p.CertFile)), thousands(rawSig)))

		n, err := startNode(ctx, pec, cfgPath, filepath.Join(dir, "serve-"+seal+".log"), o.cpuProfiles)
		if err != nil {
			return rows, notes, err
		}
		// The node's start-up work (the at-rest KEKs of this month and
		// the next, made ahead: RSA keys generated in the token, up to
		// seconds of CPU) is not the first step's.
		if waited, used, settled := waitSettled(n.cmd.Process.Pid, ctx.Done()); used > 50*time.Millisecond || !settled {
			fmt.Fprintf(os.Stderr, "edgeload: the node's start-up work (the at-rest KEKs made ahead) took %s of CPU in %s (settled: %v)\n", fmtDuration(used), fmtDuration(waited), settled)
		}
		if si == 0 && o.big > 0 {
			// First, on the fresh node: its store's file, which the node
			// maps, is small yet.
			note, err := bigDossier(ctx, n, tlsCfg, o.big)
			if err != nil {
				n.stop()
				return rows, notes, err
			}
			notes = append(notes, note)
			fmt.Fprintln(os.Stderr, "edgeload:", note)
		}
		sizes := o.sizes
		if si > 0 {
			sizes = []int64{slices.Min(o.sizes)}
		}
		for _, size := range sizes {
			docs, err := newDocuments(size)
			if err != nil {
				n.stop()
				return rows, notes, err
			}
			for ci, c := range o.concurrency {
				var prof string
				if o.cpuProfiles && si == 0 && ((size == slices.Min(o.sizes) && ci == len(o.concurrency)-1) || (size == slices.Max(o.sizes) && ci == 0)) {
					prof = filepath.Join(dir, fmt.Sprintf("cpu-%s-%d.pprof", sizeName(size), c))
				}
				r, err := runExchangeStep(ctx, n, tlsCfg, docs, c, o, prof, p.Timestamp)
				r.seal = label
				rows = append(rows, r)
				fmt.Fprintf(os.Stderr, "edgeload: %s %7s %3d clients: %s acks/s (%s MiB/s, %s of ref %s MB/s, %s per CPU-s), p50 %s, p99 %s; delivered %s/s, p50 %s, p99 %s; node %.2f cores, %s of CPU per exchange, edgeload %.2f; RSS %s MiB (anonymous %s); %d refused 503, %d errors\n",
					seal, sizeName(size), c, thousands(r.acks), mib(r.acks*float64(size)), percent(r.acks*float64(size), r.ref), mbps(r.ref), percent(r.perNodeCPU, r.refCPU),
					fmtDuration(r.ackP50), fmtDuration(r.ackP99), thousands(r.delivered), fmtDuration(r.delP50), fmtDuration(r.delP99),
					r.nodeCPU, fmtDuration(r.exchangeCPU), r.benchCPU, mib(float64(r.rssMax)), mib(float64(r.anonMax)), r.refused, r.errors)
				if err != nil {
					n.stop()
					return rows, notes, err
				}
				if prof != "" {
					where, err := whereTimeGoes(ctx, pec, prof)
					if err != nil {
						fmt.Fprintln(os.Stderr, "edgeload: profile:", err)
					} else {
						notes = append(notes, fmt.Sprintf("where the node's CPU time goes, %s %s at %d clients (%s, %.2f cores of the node; edgeload %.2f): %s",
							seal, sizeName(size), c, prof, r.nodeCPU, r.benchCPU, where))
					}
				}
				d := r.node
				notes = append(notes, fmt.Sprintf("node metrics, %s %s at %d clients: %.0f accepted; %.2f HSM signatures per exchange (mean %.2f ms); %.2f evidence records per exchange (mean %.2f ms to durable, %.1f records per durable write)",
					seal, sizeName(size), c, d.accepted, d.signs, d.signMean, d.appends, d.ackMean, d.recordsPerWrite))
			}
		}
		if err := n.stop(); err != nil {
			return rows, notes, err
		}
	}
	return rows, notes, nil
}

var (
	sealProfileLine = regexp.MustCompile(`(?m)^(  seal_profile: *)\S+`)
	workersLine     = regexp.MustCompile(`(?m)^(  workers: *)\S+`)
)

// setSealProfile edits exchange.seal_profile in the node's pec.yaml, as an
// operator would.
func setSealProfile(cfgPath, profile string) error {
	return editConfig(cfgPath, sealProfileLine, profile)
}

// editConfig replaces the value of the one line of pec.yaml that re
// matches.
func editConfig(cfgPath string, re *regexp.Regexp, value string) error {
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	if len(re.FindAllIndex(data, -1)) != 1 {
		return fmt.Errorf("%s: not one line matching %s", cfgPath, re)
	}
	data = re.ReplaceAll(data, []byte("${1}"+value))
	return os.WriteFile(cfgPath, data, 0o600)
}

// The documents.

// genBlock is the unit of generated content.
const genBlock = 64 << 10

// document is generated content: block k is the random base with k and
// the document's number XORed into its first 16 bytes, so that no two
// blocks of a run are equal.
type document struct {
	base   []byte
	number uint64
	size   int64
	sha256 string
}

func (d *document) reader() io.Reader { return &genReader{d: d} }

type genReader struct {
	d   *document
	off int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.d.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.off < g.d.size {
		k, in := g.off/genBlock, int(g.off%genBlock)
		c := min(genBlock-in, len(p)-n, int(g.d.size-g.off))
		copy(p[n:n+c], g.d.base[in:in+c])
		if in < 16 {
			var mark [16]byte
			binary.LittleEndian.PutUint64(mark[:8], uint64(k))
			binary.LittleEndian.PutUint64(mark[8:], g.d.number)
			for j := in; j < 16 && j < in+c; j++ {
				p[n+j-in] ^= mark[j]
			}
		}
		n += c
		g.off += int64(c)
	}
	return n, nil
}

// newDocuments makes the documents of one size: up to 256 of them, 64 MiB
// of content in all (one, for large sizes), their digests computed now.
func newDocuments(size int64) ([]*document, error) {
	base := make([]byte, genBlock)
	if _, err := crand.Read(base); err != nil {
		return nil, err
	}
	count := int(min(256, max(1, (64<<20)/size)))
	docs := make([]*document, count)
	for i := range docs {
		d := &document{base: base, number: uint64(i), size: size}
		h := sha256.New()
		if _, err := io.Copy(h, d.reader()); err != nil {
			return nil, err
		}
		d.sha256 = hex.EncodeToString(h.Sum(nil))
		docs[i] = d
	}
	return docs, nil
}

func manifest(d *document) middleoffice.Manifest {
	return middleoffice.Manifest{
		Recipient: "partner-b", Procedure: "dossier", Subject: "edgeload",
		Documents: []middleoffice.Document{{Name: "dossier.bin", MediaType: "application/octet-stream", SHA256: d.sha256, Size: d.size}},
	}
}

// newAPIClient is partner-a's client with one keep-alive connection.
func newAPIClient(base string, tlsCfg *tls.Config) (*api.Client, *http.Transport, error) {
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		// A chunk of the streamed body goes out in one TLS write.
		WriteBufferSize: 64 << 10,
		ReadBufferSize:  16 << 10,
	}
	c, err := api.NewClient(base, &http.Client{Transport: tr})
	return c, tr, err
}

// The steps.

type submitted struct {
	id    string
	start time.Time
}

// runExchangeStep runs c clients submitting documents for o.warmup (not
// measured) then o.duration; every client completes at least one measured
// submission, so that a step of large dossiers lasts as long as they take.
// Every client's first answer is checked in full. It then waits for the
// node to deliver every accepted exchange and reads the delivery times.
func runExchangeStep(ctx context.Context, n *node, tlsCfg *tls.Config, docs []*document, c int, o options, profile string, bt bool) (xrow, error) {
	r := xrow{size: docs[0].size, clients: c}
	warmup := o.warmup
	if docs[0].size >= 16<<20 {
		warmup = 0 // the first submissions would take the whole step
	}
	before, err := scrapeAll(n.metricsURL)
	if err != nil {
		return r, err
	}
	var (
		errs     atomic.Int64
		refused  atomic.Int64
		firstErr atomic.Pointer[error]
		mu       sync.Mutex
		samples  []time.Duration
		subs     []submitted
		wg       sync.WaitGroup
	)
	var kernels *cryptoKernels
	var q0, q1 rawCrypto
	if r.size >= 1<<20 {
		if kernels, err = newCryptoKernels(); err != nil {
			return r, err
		}
		if q0, err = kernels.single(600 * time.Millisecond); err != nil {
			return r, err
		}
	}
	start := time.Now()
	measureFrom := start.Add(warmup)
	deadline := measureFrom.Add(o.duration)
	sctx, cancel := context.WithDeadline(ctx, deadline.Add(10*time.Minute))
	defer cancel()

	stopRSS := sampleRSS(n.cmd.Process.Pid, 100*time.Millisecond, &r.rssMax)
	stopAnon := sampleField(n.cmd.Process.Pid, "RssAnon", 100*time.Millisecond, &r.anonMax)
	var profErr error
	var profDone chan struct{}
	if profile != "" {
		profDone = make(chan struct{})
		go func() {
			defer close(profDone)
			time.Sleep(time.Until(measureFrom))
			profErr = fetchProfile(sctx, n.metricsURL, profile, min(o.duration, 25*time.Second))
		}()
	}
	cpu0, bench0 := procCPUSeconds(n.cmd.Process.Pid), selfCPU()
	var lastDone, ackedBytes atomic.Int64
	for w := range c {
		wg.Go(func() {
			client, tr, err := newAPIClient(n.apiURL, tlsCfg)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			defer tr.CloseIdleConnections()
			var local []time.Duration
			var localSubs []submitted
			i, failed := w*7919, 0
			for checked := false; ; {
				t0 := time.Now()
				// Past the deadline, a client stops once it has one
				// measured answer, or three failures.
				if sctx.Err() != nil || (!t0.Before(deadline) && (len(local) > 0 || failed >= 3)) {
					break
				}
				i++
				d := docs[i%len(docs)]
				m := manifest(d)
				key := fmt.Sprintf("edgeload-%d-%d-%d", start.UnixNano(), w, i)
				s, err := client.Submit(sctx, m, key, []api.Upload{{Name: "dossier.bin", Content: d.reader()}})
				if err == nil && !checked {
					err, checked = checkReceipt(s, d, bt), true
				}
				if wait, ok := refusedFor(err); ok {
					// The node's answer to overload: wait as it asks
					// (with some jitter), then send the dossier again.
					refused.Add(1)
					select {
					case <-sctx.Done():
					case <-time.After(wait + rand.N(wait/5+time.Millisecond)):
					}
					continue
				}
				if err != nil {
					failed++
					errs.Add(1)
					if firstErr.CompareAndSwap(nil, &err) {
						fmt.Fprintf(os.Stderr, "edgeload:   first error of the step: %v\n", err)
					}
					if sctx.Err() == nil {
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				ackedBytes.Add(d.size)
				if !t0.Before(measureFrom) {
					local = append(local, time.Since(t0))
					localSubs = append(localSubs, submitted{id: s.Exchange, start: t0})
					for now := time.Now().UnixNano(); ; {
						old := lastDone.Load()
						if now <= old || lastDone.CompareAndSwap(old, now) {
							break
						}
					}
				}
			}
			mu.Lock()
			samples = append(samples, local...)
			subs = append(subs, localSubs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	end := time.Unix(0, lastDone.Load())
	if end.Before(deadline) {
		end = deadline
	}
	cpu1, bench1 := procCPUSeconds(n.cmd.Process.Pid), selfCPU()
	elapsed := end.Sub(measureFrom)
	whole := time.Since(start).Seconds()
	if cpu1 > cpu0 {
		r.perNodeCPU = float64(ackedBytes.Load()) / (cpu1 - cpu0)
	}
	if kernels != nil {
		if q1, err = kernels.single(600 * time.Millisecond); err != nil {
			return r, err
		}
		r.ref, r.refCPU = (q0.ref()+q1.ref())/2, (q0.refCPU()+q1.refCPU())/2
	}
	r.nodeCPU = (cpu1 - cpu0) / whole
	r.benchCPU = (bench1 - bench0) / whole
	r.errors = errs.Load()
	r.refused = refused.Load()
	slices.Sort(samples)
	r.acks = float64(len(samples)) / elapsed.Seconds()
	r.ackP50, r.ackP99 = quantiles(samples)
	if profDone != nil {
		<-profDone
		if profErr != nil {
			fmt.Fprintln(os.Stderr, "edgeload: profile:", profErr)
		}
	}

	// The queue catches up; then the delivery times, read once each.
	if err := waitDelivered(ctx, n.metricsURL, 2*time.Minute+time.Duration(len(subs))*5*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, "edgeload:", err)
	}
	cpu2 := procCPUSeconds(n.cmd.Process.Pid)
	stopRSS()
	stopAnon()
	after, err := scrapeAll(n.metricsURL)
	if err != nil {
		return r, err
	}
	r.node = deltas(before, after)
	if r.node.accepted > 0 {
		r.exchangeCPU = time.Duration((cpu2 - cpu0) / r.node.accepted * float64(time.Second))
	}
	dl, last, undelivered, err := deliveryTimes(ctx, n.apiURL, tlsCfg, subs)
	if err != nil {
		return r, err
	}
	r.undelivered = undelivered
	r.delP50, r.delP99 = quantiles(dl)
	if len(dl) > 0 {
		r.delivered = float64(len(dl)) / last.Sub(measureFrom).Seconds()
	}
	return r, nil
}

func quantiles(sorted []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(sorted)
	n := len(sorted)
	if n == 0 {
		return 0, 0
	}
	return sorted[n/2], sorted[min(n-1, (n*99+99)/100-1)]
}

// checkReceipt checks an answer in full: the acknowledgment of receipt is
// a CMS SignedData with the submission.accepted record of this exchange
// attached, naming the document's digest; B-T carries a signature
// timestamp.
func checkReceipt(s *api.Submission, d *document, bt bool) error {
	if s.Replayed || s.Exchange == "" || s.EvidenceID == "" {
		return fmt.Errorf("exchange: answer %+v", s)
	}
	sd, err := cms.ParseSignedData(s.Receipt)
	if err != nil {
		return fmt.Errorf("exchange: receipt: %w", err)
	}
	rec, err := evidence.UnmarshalRecord(sd.Content)
	if err != nil {
		return fmt.Errorf("exchange: receipt content: %w", err)
	}
	if rec.Type != evidence.SubmissionAccepted || rec.Subject != s.Exchange || rec.ID != s.EvidenceID {
		return fmt.Errorf("exchange: the receipt's record is %s %s of %s, not the answer's", rec.Type, rec.ID, rec.Subject)
	}
	want, _ := hex.DecodeString(d.sha256)
	if !slices.ContainsFunc(rec.Digests, func(g evidence.Digest) bool { return g.Name == "document/0" && bytes.Equal(g.Value, want) }) {
		return errors.New("exchange: the receipt does not name the document's digest")
	}
	if len(sd.SignerInfos) != 1 {
		return fmt.Errorf("exchange: receipt with %d signers", len(sd.SignerInfos))
	}
	hasTS := slices.ContainsFunc(sd.SignerInfos[0].UnsignedAttrs, func(a cms.Attribute) bool { return a.OID.Equal(oidSignatureTimeStamp) })
	if hasTS != bt {
		return fmt.Errorf("exchange: receipt signature timestamp %v, want %v", hasTS, bt)
	}
	return nil
}

// waitDelivered waits until the node has delivered every submission it
// accepted (its own counters).
func waitDelivered(ctx context.Context, metricsURL string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		m, err := scrapeAll(metricsURL)
		if err == nil && m[metricDelivered] >= m[metricAccepted] {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node delivered %.0f of %.0f accepted exchanges after %s", m[metricDelivered], m[metricAccepted], limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// deliveryTimes reads each exchange once (GET /v1/exchanges/{id}, as its
// sender) and returns the sorted times from submission to the
// delivery.delivered event, the latest event, and how many were not
// delivered.
func deliveryTimes(ctx context.Context, apiURL string, tlsCfg *tls.Config, subs []submitted) ([]time.Duration, time.Time, int, error) {
	var (
		mu          sync.Mutex
		out         []time.Duration
		last        time.Time
		undelivered int
		next        atomic.Int64
		wg          sync.WaitGroup
		firstErr    atomic.Pointer[error]
	)
	for range min(8, max(1, len(subs))) {
		wg.Go(func() {
			client, tr, err := newAPIClient(apiURL, tlsCfg)
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			defer tr.CloseIdleConnections()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(subs) {
					return
				}
				ex, err := client.Exchange(ctx, subs[i].id)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				k := slices.IndexFunc(ex.Events, func(e middleoffice.Event) bool { return e.Type == evidence.Delivered })
				mu.Lock()
				if k < 0 {
					undelivered++
				} else {
					t := ex.Events[k].Time
					out = append(out, t.Sub(subs[i].start))
					if t.After(last) {
						last = t
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return nil, last, 0, fmt.Errorf("read the exchanges: %w", *e)
	}
	slices.Sort(out)
	return out, last, undelivered, nil
}

// bigDossier sends one dossier of size alone and samples the node's RSS
// meanwhile (the peak reset first through /proc/PID/clear_refs).
func bigDossier(ctx context.Context, n *node, tlsCfg *tls.Config, size int64) (string, error) {
	docs, err := newDocuments(size)
	if err != nil {
		return "", err
	}
	pid := n.cmd.Process.Pid
	runtime.GC()
	rss0, _ := procStatus(pid, "VmRSS")
	// "5" resets the peak RSS (proc(5), clear_refs): VmHWM then covers this
	// dossier alone.
	hwmReset := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
	var rssMax, anonMax int64
	stop := sampleRSS(pid, 20*time.Millisecond, &rssMax)
	stopAnon := sampleField(pid, "RssAnon", 20*time.Millisecond, &anonMax)
	client, tr, err := newAPIClient(n.apiURL, tlsCfg)
	if err != nil {
		return "", err
	}
	defer tr.CloseIdleConnections()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	s, err := client.Submit(ctx, manifest(docs[0]), fmt.Sprintf("edgeload-big-%d", t0.UnixNano()), []api.Upload{{Name: "dossier.bin", Content: docs[0].reader()}})
	took := time.Since(t0)
	stop()
	stopAnon()
	runtime.ReadMemStats(&after)
	if err != nil {
		return "", fmt.Errorf("the %s dossier: %w", sizeName(size), err)
	}
	if err := checkReceipt(s, docs[0], true); err != nil && !strings.Contains(err.Error(), "timestamp") {
		return "", err
	}
	hwm, _ := procStatus(pid, "VmHWM")
	peak := "VmHWM could not be reset"
	if hwmReset {
		peak = "VmHWM " + mib(float64(hwm)) + " MiB"
	}
	return fmt.Sprintf("%s dossier alone, on the fresh node: acknowledged in %s (%s MiB/s); the node's VmRSS %s MiB before, at most %s MiB sampled every 20 ms while it went through (anonymous memory at most %s MiB), %s; edgeload's heap grew by %s MiB",
		sizeName(size), took.Round(time.Millisecond), mib(float64(size)/took.Seconds()), mib(float64(rss0)), mib(float64(rssMax)), mib(float64(anonMax)), peak,
		mib(float64(int64(after.HeapInuse)-int64(before.HeapInuse)))), nil
}

// The node's process.

// procStatus reads a "kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatus(data, field)
}

func parseStatus(data []byte, field string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status %s: %q", field, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc status %s: %q", field, v)
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("/proc status: no %s", field)
}

// sampleRSS keeps the largest VmRSS of pid in *max until stop is called.
func sampleRSS(pid int, every time.Duration, maxRSS *int64) (stop func()) {
	return sampleField(pid, "VmRSS", every, maxRSS)
}

// sampleField keeps the largest value of a field of /proc/PID/status.
func sampleField(pid int, field string, every time.Duration, maxRSS *int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := procStatus(pid, field); err == nil && v > *maxRSS {
				*maxRSS = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// procCPUSeconds is the user and system CPU time of pid, seconds.
func procCPUSeconds(pid int) float64 { return procCPU(strconv.Itoa(pid)).Seconds() }

// parseStatCPU reads utime + stime, seconds, from a /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func parseStatCPU(data []byte) (float64, error) {
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command name")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("/proc stat: too few fields")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("/proc stat: utime or stime not a number")
	}
	return float64(utime+stime) / 100, nil
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// The node's metrics.

// scrapeAll reads every sample of the exposition at url: a name with its
// labels as written ("a{b=\"c\"}") and, summed over its labels, the name
// alone.
func scrapeAll(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseAll(resp.Body), nil
}

func parseAll(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		var series, rest string
		if end >= 0 {
			series, rest = line[:end+1], line[end+1:]
		} else {
			var ok bool
			if series, rest, ok = strings.Cut(line, " "); !ok {
				continue
			}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil || v != v {
			continue
		}
		name, _, _ := strings.Cut(series, "{")
		out[series] = v
		if name != series {
			out[name] += v
		}
	}
	return out
}

func deltas(before, after map[string]float64) nodeDeltas {
	d := func(k string) float64 { return after[k] - before[k] }
	n := nodeDeltas{accepted: d(metricAccepted)}
	per := func(v float64) float64 {
		if n.accepted == 0 {
			return 0
		}
		return v / n.accepted
	}
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	n.signs = per(d(metricSignCount))
	n.signMean = 1000 * ratio(d(metricSignSum), d(metricSignCount))
	n.appends = per(d(metricAppends))
	n.ackMean = 1000 * ratio(d(metricAckSum), d(metricAckCount))
	n.recordsPerWrite = ratio(d(metricBatchSum), d(metricBatchCount))
	return n
}

// The node's profile.

// fetchProfile saves a CPU profile of d from the ops listener.
func fetchProfile(ctx context.Context, metricsURL, file string, d time.Duration) error {
	base := strings.TrimSuffix(metricsURL, "/metrics")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, max(1, int(d.Seconds()))), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// categories sort a sample by the first rule, in this order, that one of
// its frames matches (a frame: a function's full name).
var categories = []struct {
	name string
	re   *regexp.Regexp
}{
	{"signing (receipt, seal, TSA token: HSM or software key)", regexp.MustCompile(`pkcs11|crypto/ecdsa|crypto/internal/fips140/ecdsa|crypto/rsa|pec/hsm\.|nistec`)},
	{"TLS (records, handshakes, loopback reads and writes)", regexp.MustCompile(`^crypto/tls\.`)},
	{"hashing (SHA-256 of documents and envelopes)", regexp.MustCompile(`sha256`)},
	{"encryption (the envelope's AES-CTR and GHASH)", regexp.MustCompile(`^pec/internal/cms\.\(\*EnvelopeWriter\)|crypto/internal/fips140/aes|crypto/aes|crypto/cipher`)},
	{"exchange store (bbolt, payload files, fsync)", regexp.MustCompile(`go\.etcd\.io/bbolt|BoltExchangeStore|filePayloadWriter|syncDir`)},
	{"evidence log (records, group commit, sealing)", regexp.MustCompile(`^pec/proof\.|^pec/evidence\.`)},
	{"multipart and HTTP", regexp.MustCompile(`^mime/multipart|^net/http\.|^net/textproto|^pec/gateway`)},
	{"JSON", regexp.MustCompile(`^encoding/json`)},
	{"garbage collection and allocation", regexp.MustCompile(`^runtime\.(gcBgMarkWorker|mallocgc|gcDrain|bgsweep|bgscavenge|scanobject|markroot)`)},
	{"scheduler and other system calls", regexp.MustCompile(`^runtime\.|^syscall\.|^internal/poll`)},
}

// whereTimeGoes reads the profile's samples (go tool pprof -traces) and
// sums them by category.
func whereTimeGoes(ctx context.Context, pec, profile string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", pec, profile)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -traces %s: %w", profile, err)
	}
	sums, total := classifyTraces(out)
	if total == 0 {
		return "", errors.New("the profile has no samples")
	}
	type kv struct {
		k string
		v time.Duration
	}
	var list []kv
	for k, v := range sums {
		list = append(list, kv{k, v})
	}
	slices.SortFunc(list, func(a, b kv) int { return int(b.v - a.v) })
	var parts []string
	for _, e := range list {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", e.k, 100*float64(e.v)/float64(total)))
	}
	return strings.Join(parts, ", "), nil
}

// classifyTraces sums the samples of `go tool pprof -traces` output by
// category ("other" when no rule matches).
//
//	-----------+-------------------------------------------------------
//	      10ms   runtime.futex
//	             runtime.notesleep
func classifyTraces(out []byte) (map[string]time.Duration, time.Duration) {
	sums := map[string]time.Duration{}
	var total time.Duration
	var value time.Duration
	var frames []string
	flush := func() {
		if value == 0 {
			return
		}
		cat := "other"
	rules:
		for _, c := range categories {
			for _, f := range frames {
				if c.re.MatchString(f) {
					cat = c.name
					break rules
				}
			}
		}
		sums[cat] += value
		total += value
		value, frames = 0, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		// A frame: "%10s   %s", the sample's value on its first frame.
		if len(line) < 14 || line[10:13] != "   " {
			continue // the header (File, Type, Duration), a label
		}
		name := strings.Fields(line[13:])
		if len(name) == 0 {
			continue
		}
		if v := strings.TrimSpace(line[:10]); v != "" {
			flush()
			d, err := time.ParseDuration(v)
			if err != nil {
				continue
			}
			value = d
		}
		if value != 0 {
			frames = append(frames, name[0])
		}
	}
	flush()
	return sums, total
}

// The raw references.

// measureCrypto measures SHA-256 and AES-256-GCM (64 KiB chunks, as the
// envelope writer streams them) on one goroutine, then on GOMAXPROCS.
func measureCrypto(d time.Duration) (rawCrypto, error) {
	k, err := newCryptoKernels()
	if err != nil {
		return rawCrypto{}, err
	}
	var r rawCrypto
	if r, err = k.single(d / 2); err != nil {
		return r, err
	}
	n := runtime.GOMAXPROCS(0)
	if r.shaAll, _, err = parallelBytes(n, d/4, k.sha); err != nil {
		return r, err
	}
	r.gcmAll, _, err = parallelBytes(n, d/4, k.gcm)
	return r, err
}

// cryptoKernels are the work of the references: a 1 MiB buffer hashed, or
// sealed 64 KiB at a time.
type cryptoKernels struct {
	buf   []byte
	block cipher.Block
	dst   [][]byte
}

func newCryptoKernels() (*cryptoKernels, error) {
	k := &cryptoKernels{buf: make([]byte, 1<<20), dst: make([][]byte, runtime.GOMAXPROCS(0))}
	crand.Read(k.buf)
	key := make([]byte, 32)
	crand.Read(key)
	var err error
	k.block, err = aes.NewCipher(key)
	return k, err
}

func (k *cryptoKernels) sha(int) (int, error) {
	h := sha256.New()
	h.Write(k.buf)
	h.Sum(nil)
	return len(k.buf), nil
}

func (k *cryptoKernels) gcm(g int) (int, error) {
	gcm, err := cipher.NewGCM(k.block)
	if err != nil {
		return 0, err
	}
	nonce := make([]byte, gcm.NonceSize())
	for off := 0; off < len(k.buf); off += streamChunkRef {
		k.dst[g] = gcm.Seal(k.dst[g][:0], nonce, k.buf[off:off+streamChunkRef], nil)
	}
	return len(k.buf), nil
}

// single measures SHA-256 and AES-256-GCM on one goroutine for d/2 each:
// per second of wall time, and per second of the thread's CPU time (what
// a machine shared with other work still says).
func (k *cryptoKernels) single(d time.Duration) (rawCrypto, error) {
	var r rawCrypto
	var err error
	if r.sha1, r.sha1CPU, err = parallelBytes(1, d/2, k.sha); err != nil {
		return r, err
	}
	r.gcm1, r.gcm1CPU, err = parallelBytes(1, d/2, k.gcm)
	return r, err
}

// streamChunkRef is the chunk of the GCM reference: internal/cms's
// streamChunk.
const streamChunkRef = 64 << 10

// parallelBytes runs fn on n goroutines for d and returns the bytes per
// second they processed; with one goroutine, also per second of its
// thread's CPU time.
func parallelBytes(n int, d time.Duration, fn func(g int) (int, error)) (wall, cpu float64, err error) {
	var (
		total    atomic.Int64
		firstErr atomic.Pointer[error]
		cpuTime  atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for g := range n {
		wg.Go(func() {
			if n == 1 {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				t0 := threadCPU()
				defer func() { cpuTime.Store(int64(threadCPU() - t0)) }()
			}
			for time.Now().Before(deadline) {
				b, err := fn(g)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				total.Add(int64(b))
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, *e
	}
	wall = float64(total.Load()) / time.Since(start).Seconds()
	if c := cpuTime.Load(); c > 0 {
		cpu = float64(total.Load()) / time.Duration(c).Seconds()
	}
	return wall, cpu, nil
}

// threadCPU is the CPU time of the calling thread (getrusage
// RUSAGE_THREAD, Linux).
func threadCPU() time.Duration {
	const rusageThread = 1
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The report.

func printExchangeTable(w io.Writer, rows []xrow, raw rawCrypto) {
	fmt.Fprintln(w, "| seal | size | clients | acknowledged/s | MiB/s | ref MB/s | of ref | of ref, per CPU-s | ack p50 | ack p99 | delivered/s | delivery p50 | delivery p99 | node CPU | node CPU per exchange | edgeload CPU | node RSS max (anonymous) | 503 backlog | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		del := thousands(r.delivered)
		if r.undelivered > 0 {
			del += fmt.Sprintf(" (%d not delivered)", r.undelivered)
		}
		ref, of, ofCPU := "", "", ""
		if r.ref > 0 {
			ref, of, ofCPU = mbps(r.ref), percent(r.acks*float64(r.size), r.ref), percent(r.perNodeCPU, r.refCPU)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %s | %.2f | %s MiB (%s) | %d | %d |\n",
			r.seal, sizeName(r.size), r.clients, thousands(r.acks), mib(r.acks*float64(r.size)), ref, of, ofCPU,
			fmtDuration(r.ackP50), fmtDuration(r.ackP99), del, fmtDuration(r.delP50), fmtDuration(r.delP99),
			r.nodeCPU, fmtDuration(r.exchangeCPU), r.benchCPU, mib(float64(r.rssMax)), mib(float64(r.anonMax)), r.refused, r.errors)
	}
}

// parseSize reads "10KiB", "1MiB", "100MiB", "1GiB" or a number of bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return n * mult, nil
}

// sizeName writes a size as parseSize reads it: 10KiB, 100MiB.
func sizeName(n int64) string {
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// mbps writes bytes per second as MB/s (10^6), mib as MiB (2^20).
func mbps(v float64) string { return thousands(v / 1e6) }

func mib(v float64) string {
	if v < 10<<20 {
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64)
	}
	return thousands(v / (1 << 20))
}

// refusedFor reads the node's answer to overload: a 503 delivery-backlog
// or overloaded, and the time it asks the client to wait (Retry-After;
// 1 s without one).
func refusedFor(err error) (time.Duration, bool) {
	e, ok := errors.AsType[*api.Error](err)
	if !ok || e.StatusCode != http.StatusServiceUnavailable || (e.Problem.Type != api.TypeDeliveryBacklog && e.Problem.Type != api.TypeOverloaded) {
		return 0, false
	}
	if e.RetryAfter <= 0 {
		return time.Second, true
	}
	return e.RetryAfter, true
}
