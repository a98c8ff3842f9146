// Command edgeload measures PEC at the user's edge: it builds the real
// `pec serve`, creates its nodes with `pec init` as a user would (the dev
// configuration, evidence log on), and drives them over loopback with a
// bounded load generator:
//
//   - tsa: RFC 3161 over HTTP (POST /tsa, application/timestamp-query), a
//     random SHA-256 imprint and nonce in every request;
//   - sign-bb: POST /v1/signatures over mutual TLS (client partner-a), a
//     detached CAdES signature of a 1 KiB document with profile cades-bb
//     (B-B: no timestamp);
//   - sign-bt: the same with profile default (B-T: a signature timestamp).
//
// For each key kind (software: PKCS#8 files; softhsm: a SoftHSM2 token) it
// first measures the raw signing rate of the node's own keys on every core —
// crypto.Signer on the PKCS#8 key, or C_SignInit + C_Sign straight on the
// token through PKCS#11 — and then, at each concurrency, the node's rate,
// p50, p99, errors and the longest seal delay that its /metrics reports
// (pec_proof_seal_delay_max_seconds; n/a when the node has none). The load
// generator shares the cores with the node, as a client on a 2-core machine
// would.
//
//	go run ./bench/edgeload [-duration 5s] [-concurrency 1,8,64] [-keys software,softhsm]
//	                        [-scenarios tsa,sign-bb,sign-bt] [-pec PATH]
//
// With -mode exchange it measures the exchange instead (exchange.go):
// submissions of tele-dossiers to acknowledgment and to delivery, by size
// and clients, beside the raw SHA-256 and AES-256-GCM references.
//
//	go run ./bench/edgeload -mode exchange [-sizes 10KiB,1MiB,100MiB] [-concurrency 1,16,128]
//	                        [-big 1GiB] [-seals default,cades-bb] [-workers N] [-profile=false]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/miekg/pkcs11"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"pec/gateway/api"
)

// sealDelayMetric is the node's gauge of the longest delay between a
// record's acknowledgment and the checkpoint that seals it.
const sealDelayMetric = "pec_proof_seal_delay_max_seconds"

// documentSize is the size of the documents signed through the API.
const documentSize = 1 << 10

type options struct {
	duration, warmup, rawDuration time.Duration
	concurrency                   []int
	keys, scenarios               []string
	pec                           string
	keep                          bool
	// The exchange mode (exchange.go).
	mode        string
	sizes       []int64
	big         int64
	seals       []string
	cpuProfiles bool // exchange: the node's CPU profiles into the report
	workers     int
	profile     string // directory for the node's and the load generator's profiles; "" none
}

func main() {
	var o options
	var conc, keys, scenarios, sizes, big, seals string
	flag.StringVar(&o.mode, "mode", "sign", "sign: the tsa and signature scenarios; exchange: the exchange (see exchange.go)")
	flag.StringVar(&sizes, "sizes", "10KiB,1MiB,100MiB", "exchange: dossier sizes (KiB, MiB, GiB)")
	flag.StringVar(&big, "big", "1GiB", "exchange: the dossier sent alone while the node's RSS is sampled; 0: none")
	flag.StringVar(&seals, "seals", "default,cades-bb", "exchange: seal profiles (exchange.seal_profile), each on the node restarted; after the first, the smallest size only")
	flag.IntVar(&o.workers, "workers", 0, "exchange: exchange.workers of the node (queue workers sealing and delivering); 0: as pec init writes it")
	flag.BoolVar(&o.cpuProfiles, "cpu-profiles", true, "exchange: CPU profiles of the node (ops /debug/pprof/profile) at the smallest size with the most clients and the largest size with the fewest")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured time of each step")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured load before each step")
	flag.DurationVar(&o.rawDuration, "raw", 2*time.Second, "time of each raw signing-rate measurement")
	flag.StringVar(&conc, "concurrency", "1,8,64", "comma-separated numbers of clients")
	flag.StringVar(&keys, "keys", "software,softhsm", "key kinds: software (PKCS#8 files), softhsm (SoftHSM2 token)")
	flag.StringVar(&scenarios, "scenarios", "tsa,sign-bb,sign-bt", "scenarios: tsa, sign-bb, sign-bt")
	flag.StringVar(&o.pec, "pec", "", "pec binary to run (default: go build ./cmd/pec into a temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (nodes, logs) and print its path")
	flag.StringVar(&o.profile, "profile", "", "write CPU and allocation profiles of the node (PEC_DEBUG_PPROF=1) and of edgeload for each step into this directory")
	flag.Parse()
	if flag.NArg() > 0 {
		usage("unexpected arguments %q", flag.Args())
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch o.mode {
	case "sign":
	case "exchange":
		// The exchange's defaults: the clients of issue 10's targets, and
		// the node as `pec init` makes it (a SoftHSM2 token).
		if !set["concurrency"] {
			conc = "1,16,128"
		}
		if !set["keys"] {
			keys = "softhsm"
		}
		for _, s := range splitList(sizes) {
			n, err := parseSize(s)
			if err != nil || n < 1 || n > 1<<30 {
				usage("-sizes %q: want sizes from 1 B to 1 GiB (10KiB, 1MiB, 100MiB)", sizes)
			}
			o.sizes = append(o.sizes, n)
		}
		var err error
		if o.big, err = parseSize(big); err != nil || o.big < 0 || o.big > 1<<30 {
			usage("-big %q: want a size up to 1 GiB, or 0", big)
		}
		if o.seals = splitList(seals); len(o.sizes) == 0 || len(o.seals) == 0 {
			usage("-sizes and -seals: want at least one")
		}
	default:
		usage("-mode %q: sign or exchange", o.mode)
	}
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 4096 {
			usage("-concurrency %q: want numbers from 1 to 4096", conc)
		}
		o.concurrency = append(o.concurrency, n)
	}
	o.keys = splitList(keys)
	for _, k := range o.keys {
		if k != "software" && k != "softhsm" {
			usage("-keys: unknown key kind %q (software, softhsm)", k)
		}
	}
	o.scenarios = splitList(scenarios)
	for _, s := range o.scenarios {
		if o.mode == "exchange" {
			break
		}
		if _, ok := profiles[s]; !ok && s != "tsa" {
			usage("-scenarios: unknown scenario %q (tsa, sign-bb, sign-bt)", s)
		}
	}
	if o.duration <= 0 || o.warmup < 0 || o.rawDuration <= 0 {
		usage("-duration and -raw must be positive, -warmup not negative")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runMode := run
	if o.mode == "exchange" {
		runMode = runExchange
	}
	if err := runMode(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "edgeload:", err)
		os.Exit(1)
	}
}

func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "edgeload: "+format+"\n", args...)
	flag.Usage()
	os.Exit(2)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// profiles maps the signature scenarios to the dev configuration's profiles.
var profiles = map[string]string{"sign-bb": "cades-bb", "sign-bt": "default"}

// row is one line of the result table.
type row struct {
	scenario, key string
	label         string // of the key in the node's HSM
	clients       int
	result        result
	raw, rawAfter float64 // raw signatures/s before the node started, after it stopped
	sealDelay     string
}

// setup makes the working directory (removed by cleanup unless -keep)
// and builds pec into it unless -pec names one.
func setup(ctx context.Context, o options) (work, pec string, cleanup func(), err error) {
	work, err = os.MkdirTemp("", "edgeload-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() {}
	if o.keep {
		fmt.Fprintln(os.Stderr, "edgeload: working directory", work)
	} else {
		cleanup = func() { os.RemoveAll(work) }
	}
	pec = o.pec
	if pec == "" {
		pec = filepath.Join(work, "pec")
		fmt.Fprintln(os.Stderr, "edgeload: go build -o", pec, "./cmd/pec")
		build := exec.CommandContext(ctx, "go", "build", "-o", pec, "pec/cmd/pec")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			cleanup()
			return "", "", nil, fmt.Errorf("build pec (run edgeload inside the pec module, or pass -pec): %w", err)
		}
	}
	return work, pec, cleanup, nil
}

func run(ctx context.Context, o options) (err error) {
	work, pec, cleanup, err := setup(ctx, o)
	if err != nil {
		return err
	}
	defer cleanup()

	began := time.Now()
	load0 := loadAverage()
	var rows []row
	for _, kind := range o.keys {
		kindRows, err := runKind(ctx, o, pec, filepath.Join(work, kind), kind)
		rows = append(rows, kindRows...)
		if err != nil {
			printTable(os.Stdout, rows)
			return fmt.Errorf("%s keys: %w", kind, err)
		}
	}
	fmt.Printf("edgeload %s: `pec serve` (dev config, evidence on) over loopback, %d CPUs, GOMAXPROCS %d here, %s, %s a step after %s warm-up, raw rates over %s; load average %s at the start, %s at the end; %s in all\n\n",
		began.UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(),
		o.duration, o.warmup, o.rawDuration, load0, loadAverage(), time.Since(began).Round(time.Second))
	printTable(os.Stdout, rows)
	printDrift(os.Stdout, rows)
	return nil
}

// printDrift names the raw rates measured again after each node stopped:
// a reference that moved much says the machine's other load changed.
func printDrift(w io.Writer, rows []row) {
	var parts []string
	seen := map[string]bool{}
	for _, r := range rows {
		if k := r.key + "/" + r.label; !seen[k] && r.rawAfter > 0 {
			seen[k] = true
			parts = append(parts, fmt.Sprintf("%s key %s %s → %s", r.key, r.label, thousands(r.raw), thousands(r.rawAfter)))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "\nraw sig/s before the node started → after it stopped: %s\n", strings.Join(parts, "; "))
	}
}

// runKind creates one node with keys of kind, measures the raw rates of its
// keys, then runs every scenario against it.
func runKind(ctx context.Context, o options, pec, dir, kind string) ([]row, error) {
	nodeDir := filepath.Join(dir, "node")
	args := []string{"init", "--dir", nodeDir}
	if kind == "software" {
		args = append(args, "--software-keys")
	} else if _, err := os.Stat(softHSMModule); err != nil {
		return nil, fmt.Errorf("%w: install SoftHSM2 (apt-get install softhsm2)", err)
	}
	if out, err := exec.CommandContext(ctx, pec, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pec %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	cfgPath := filepath.Join(nodeDir, "pec.yaml")
	cfg, err := loadNodeConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	if (kind == "softhsm") != (cfg.HSM.Module != "") {
		return nil, fmt.Errorf("%s: hsm.module %q does not match key kind %s", cfgPath, cfg.HSM.Module, kind)
	}

	// The raw rate of each key the scenarios use, measured before the node
	// starts, so that it has the cores to itself.
	type keyInfo struct {
		label, name string
		timestamp   bool // sign scenarios: the profile adds a signature timestamp
	}
	keys := map[string]keyInfo{}
	for _, sc := range o.scenarios {
		var ki keyInfo
		if sc == "tsa" {
			ki = keyInfo{label: cfg.TSA.KeyLabel, name: keyName(kind, cfg.path(cfg.TSA.CertFile))}
		} else {
			p, ok := cfg.profile(profiles[sc])
			if !ok {
				return nil, fmt.Errorf("%s: no signature profile %q (scenario %s)", cfgPath, profiles[sc], sc)
			}
			if p.Format != "cades" || p.Timestamp != (sc == "sign-bt") {
				return nil, fmt.Errorf("%s: profile %q is format %s, timestamp %v: not what scenario %s measures", cfgPath, p.Name, p.Format, p.Timestamp, sc)
			}
			ki = keyInfo{label: p.KeyLabel, name: keyName(kind, cfg.path(p.CertFile)), timestamp: p.Timestamp}
		}
		keys[sc] = ki
	}
	var labels []string
	for _, sc := range o.scenarios {
		if !slices.Contains(labels, keys[sc].label) {
			labels = append(labels, keys[sc].label)
		}
	}
	measureRaw := func(when string) (map[string]float64, error) {
		rates := map[string]float64{}
		for _, label := range labels {
			var rate float64
			var err error
			if kind == "software" {
				rate, err = rawSoftware(cfg.path(filepath.Join(cfg.HSM.KeyDir, label+".key")), o.rawDuration)
			} else {
				rate, err = rawPKCS11(cfg, label, o.rawDuration)
			}
			if err != nil {
				return nil, fmt.Errorf("raw rate of key %q: %w", label, err)
			}
			rates[label] = rate
			fmt.Fprintf(os.Stderr, "edgeload: %s key %q %s: raw %s signatures/s on all cores\n", kind, label, when, thousands(rate))
		}
		return rates, nil
	}
	rawRates, err := measureRaw("before the node starts")
	if err != nil {
		return nil, err
	}

	n, err := startNode(ctx, pec, cfgPath, filepath.Join(dir, "serve.log"), o.profile != "")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := n.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "edgeload:", err)
		}
	}()
	client, err := newClientTLS(nodeDir)
	if err != nil {
		return nil, err
	}

	var rows []row
	for _, sc := range o.scenarios {
		var s scenario
		if sc == "tsa" {
			if s, err = newTSAScenario(n.tsaURL); err != nil {
				return rows, err
			}
		} else {
			s = newSignScenario(n.apiURL+"signatures", profiles[sc], keys[sc].timestamp, client)
		}
		for _, c := range o.concurrency {
			if err := ctx.Err(); err != nil {
				return rows, err
			}
			var prof *stepProfile
			if o.profile != "" {
				prof = startProfile(ctx, o.profile, fmt.Sprintf("%s-%s-%d", kind, sc, c), n.opsBase(), o.warmup, o.duration)
			}
			cpu0 := make(chan cpuSample, 1)
			go func() { time.Sleep(o.warmup); cpu0 <- takeCPUSample(n.cmd.Process.Pid, n.metricsURL) }()
			r := runStep(ctx, s, c, o.warmup, o.duration)
			cpu1 := takeCPUSample(n.cmd.Process.Pid, n.metricsURL)
			if prof != nil {
				prof.finish()
			}
			if err := ctx.Err(); err != nil {
				return rows, fmt.Errorf("interrupted during %s at %d clients", sc, c)
			}
			seal := "n/a"
			if v, ok := scrapeGauge(n.metricsURL, sealDelayMetric); ok {
				seal = fmtDuration(time.Duration(v * float64(time.Second)))
			}
			rw := row{scenario: sc, key: keys[sc].name, label: keys[sc].label, clients: c, result: r, raw: rawRates[keys[sc].label], sealDelay: seal}
			rows = append(rows, rw)
			fmt.Fprintf(os.Stderr, "edgeload: %-8s %-15s %3d clients: %8s req/s (%s of raw), p50 %s, p99 %s, seal %s, %d errors\n",
				sc, rw.key, c, thousands(r.rate), percent(r.rate, rw.raw), fmtDuration(r.p50), fmtDuration(r.p99), seal, r.errors)
			if u, ok := cpuBetween(<-cpu0, cpu1, r.rate*o.duration.Seconds()); ok {
				fmt.Fprintf(os.Stderr, "edgeload:   %s\n", u)
			}
			if r.firstErr != nil {
				fmt.Fprintf(os.Stderr, "edgeload:   first error: %v\n", r.firstErr)
			}
			if r.warning != "" {
				fmt.Fprintf(os.Stderr, "edgeload:   %s\n", r.warning)
			}
		}
	}
	if err := n.stop(); err != nil {
		return rows, err
	}
	// Again once the node has stopped: how far the machine's other load
	// moved the reference during the steps.
	after, err := measureRaw("after the node stopped")
	if err != nil {
		return rows, err
	}
	for i := range rows {
		rows[i].rawAfter = after[rows[i].label]
	}
	return rows, nil
}

// nodeConfig is the part of pec.yaml that edgeload reads (not strictly:
// `pec serve` checks the whole file).
type nodeConfig struct {
	dir string
	HSM struct {
		Module       string `yaml:"module"`
		TokenLabel   string `yaml:"token_label"`
		PINFile      string `yaml:"pin_file"`
		SoftHSM2Conf string `yaml:"softhsm2_conf"`
		KeyDir       string `yaml:"key_dir"`
	} `yaml:"hsm"`
	TSA struct {
		KeyLabel string `yaml:"key_label"`
		CertFile string `yaml:"cert_file"`
	} `yaml:"tsa"`
	Signing struct {
		Profiles []profileConfig `yaml:"profiles"`
	} `yaml:"signing"`
}

type profileConfig struct {
	Name      string `yaml:"name"`
	KeyLabel  string `yaml:"key_label"`
	CertFile  string `yaml:"cert_file"`
	Format    string `yaml:"format"`
	Timestamp bool   `yaml:"timestamp"`
}

func loadNodeConfig(path string) (*nodeConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := &nodeConfig{dir: filepath.Dir(path)}
	if err := yaml.Unmarshal(data, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// path resolves p as pec serve does: relative to the configuration's directory.
func (c *nodeConfig) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *nodeConfig) profile(name string) (profileConfig, bool) {
	for _, p := range c.Signing.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return profileConfig{}, false
}

// keyName names a key for the table, "SoftHSM2 P-256", from the public key
// of its certificate.
func keyName(kind, certFile string) string {
	prefix := "software"
	if kind == "softhsm" {
		prefix = "SoftHSM2"
	}
	alg := "?"
	if certs, err := loadCerts(certFile); err == nil {
		switch k := certs[0].PublicKey.(type) {
		case *ecdsa.PublicKey:
			alg = k.Curve.Params().Name
		case *rsa.PublicKey:
			alg = fmt.Sprintf("RSA-%d", k.N.BitLen())
		}
	}
	return prefix + " " + alg
}

func loadCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return certs, nil
}

// The raw references.

// rawSoftware is the signature rate of the PKCS#8 key in keyFile on
// GOMAXPROCS goroutines: the ceiling of anything signing with it.
func rawSoftware(keyFile string, d time.Duration) (float64, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return 0, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return 0, fmt.Errorf("%s: no PEM block", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return 0, fmt.Errorf("%s: %T is not a signer", keyFile, k)
	}
	digest := sha256.Sum256([]byte("edgeload"))
	return parallelRate(runtime.GOMAXPROCS(0), d, func(int) error {
		_, err := signer.Sign(crand.Reader, digest[:], crypto.SHA256)
		return err
	})
}

const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// pkcs11Once: a PKCS#11 module is initialised once per process, and
// SoftHSM2 reads SOFTHSM2_CONF only then; edgeload makes one SoftHSM2 node
// per run.
var pkcs11Once struct {
	sync.Mutex
	ctx  *pkcs11.Ctx
	conf string
}

// rawPKCS11 is the rate of C_SignInit + C_Sign with the node's key label
// on as many sessions as the node's pool has by default (2 × GOMAXPROCS, at
// least 8), each driven by its own goroutine, straight through the module.
func rawPKCS11(cfg *nodeConfig, label string, d time.Duration) (float64, error) {
	p, err := openModule(cfg)
	if err != nil {
		return 0, err
	}
	pinData, err := os.ReadFile(cfg.path(cfg.HSM.PINFile))
	if err != nil {
		return 0, err
	}
	pin := strings.TrimRight(string(pinData), "\r\n")
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	slot, found := uint(0), false
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && ti.Label == cfg.HSM.TokenLabel {
			slot, found = s, true
			break
		}
	}
	if !found {
		return 0, fmt.Errorf("no token %q", cfg.HSM.TokenLabel)
	}
	n := max(8, 2*runtime.GOMAXPROCS(0))
	type session struct {
		sh  pkcs11.SessionHandle
		key pkcs11.ObjectHandle
	}
	sessions := make([]session, 0, n)
	defer func() {
		for _, s := range sessions {
			p.CloseSession(s.sh)
		}
	}()
	var mech []*pkcs11.Mechanism
	digest := sha256.Sum256([]byte("edgeload"))
	msg := digest[:]
	for i := range n {
		sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			return 0, err
		}
		sessions = append(sessions, session{sh: sh})
		if i == 0 { // login is per application, for every session
			if err := p.Login(sh, pkcs11.CKU_USER, pin); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
				return 0, fmt.Errorf("login: %w", err)
			}
			defer p.Logout(sh)
		}
		if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}); err != nil {
			return 0, err
		}
		objs, _, err := p.FindObjects(sh, 2)
		p.FindObjectsFinal(sh)
		if err != nil || len(objs) != 1 {
			return 0, fmt.Errorf("find private key %q: %d objects, %v", label, len(objs), err)
		}
		sessions[i].key = objs[0]
		if i == 0 {
			attrs, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
			if err != nil {
				return 0, err
			}
			switch kt := bytesToUint(attrs[0].Value); kt {
			case pkcs11.CKK_EC:
				mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
			case pkcs11.CKK_RSA: // PKCS#1 v1.5 over a SHA-256 DigestInfo (RFC 8017 section 9.2)
				mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
				prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
				msg = append(prefix, digest[:]...)
			default:
				return 0, fmt.Errorf("key %q: key type %#x not measured", label, kt)
			}
		}
	}
	return parallelRate(n, d, func(g int) error {
		if err := p.SignInit(sessions[g].sh, mech, sessions[g].key); err != nil {
			return err
		}
		_, err := p.Sign(sessions[g].sh, msg)
		return err
	})
}

func openModule(cfg *nodeConfig) (*pkcs11.Ctx, error) {
	pkcs11Once.Lock()
	defer pkcs11Once.Unlock()
	conf := cfg.path(cfg.HSM.SoftHSM2Conf)
	if pkcs11Once.ctx != nil {
		if conf != pkcs11Once.conf {
			return nil, errors.New("the PKCS#11 module is already initialised with another SoftHSM2 configuration")
		}
		return pkcs11Once.ctx, nil
	}
	if conf != "" {
		os.Setenv("SOFTHSM2_CONF", conf)
	}
	p := pkcs11.New(cfg.HSM.Module)
	if p == nil {
		return nil, fmt.Errorf("cannot load PKCS#11 module %s", cfg.HSM.Module)
	}
	if err := p.Initialize(); err != nil {
		return nil, fmt.Errorf("initialise %s: %w", cfg.HSM.Module, err)
	}
	pkcs11Once.ctx, pkcs11Once.conf = p, conf
	return p, nil
}

// bytesToUint reads a CK_ULONG attribute (native byte order, little-endian
// on the machines edgeload runs on).
func bytesToUint(b []byte) uint {
	var v uint
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint(b[i])
	}
	return v
}

// parallelRate runs fn on n goroutines (fn gets the goroutine's number) for
// d and returns the calls per second.
func parallelRate(n int, d time.Duration, fn func(g int) error) (float64, error) {
	var (
		count    atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for g := range n {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := fn(g); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, *e
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// The node.

type node struct {
	cmd                        *exec.Cmd
	logFile                    string
	tsaURL, apiURL, metricsURL string
	done                       chan error // the process's exit
	stopped                    bool
}

// startNode runs `pec serve` on free loopback ports and waits until it is
// ready. Its JSON log goes to logFile.
func startNode(ctx context.Context, pec, cfgPath, logFile string, pprof bool) (*node, error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(pec, "serve", "--config", cfgPath, "--listen", "tsa=127.0.0.1:0", "--listen", "api=127.0.0.1:0", "--listen", "ops=127.0.0.1:0")
	// The node sets SOFTHSM2_CONF from its own configuration.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SOFTHSM2_CONF=") })
	if pprof {
		cmd.Env = append(cmd.Env, "PEC_DEBUG_PPROF=1")
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	n := &node{cmd: cmd, logFile: logFile, done: make(chan error, 1)}
	urls := make(chan [3]string, 1)
	go func() {
		// "PEC is serving" is followed by one line per listener:
		// "  tsa  http://127.0.0.1:PORT/tsa", "  ops  http://127.0.0.1:PORT/metrics".
		var tsaURL, apiURL, opsURL string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "tsa" {
				tsaURL = f[1]
			}
			if len(f) == 2 && f[0] == "api" {
				apiURL = f[1]
			}
			if len(f) == 2 && f[0] == "ops" {
				opsURL = f[1]
			}
			if strings.HasPrefix(sc.Text(), "Stop with") {
				urls <- [3]string{tsaURL, apiURL, opsURL}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		n.done <- cmd.Wait()
		logf.Close()
	}()
	fail := func(err error) (*node, error) {
		n.stop()
		return nil, fmt.Errorf("pec serve: %w%s", err, n.logTail())
	}
	select {
	case u := <-urls:
		if u[0] == "" || u[1] == "" || u[2] == "" {
			return fail(fmt.Errorf("no tsa, api or ops URL in the serving lines (%q, %q, %q)", u[0], u[1], u[2]))
		}
		// /metrics is on the operations listener only.
		n.tsaURL, n.apiURL, n.metricsURL = u[0], u[1], u[2]
	case err := <-n.done:
		n.done <- err
		return fail(fmt.Errorf("exited before serving: %v", err))
	case <-time.After(60 * time.Second):
		return fail(errors.New("not serving after 60 s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	base := strings.TrimSuffix(n.tsaURL, "/tsa")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				waited, used, ok := waitSettled(cmd.Process.Pid, ctx.Done())
				if !ok {
					fmt.Fprintf(os.Stderr, "edgeload: the node is still busy %s after it was ready (%s of CPU meanwhile): measuring anyway\n", fmtDuration(waited), fmtDuration(used))
				} else if used > 50*time.Millisecond {
					fmt.Fprintf(os.Stderr, "edgeload: the node settled %s after it was ready (%s of CPU of its start meanwhile, not measured)\n", fmtDuration(waited), fmtDuration(used))
				}
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("/readyz not 200 after 30 s (%v)", err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the node to drain and exit (SIGKILL after
// 30 s). It reports a node that did not exit cleanly.
func (n *node) stop() error {
	if n.stopped {
		return nil
	}
	n.stopped = true
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		if err != nil {
			return fmt.Errorf("pec serve exited after SIGTERM: %w%s", err, n.logTail())
		}
		return nil
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("pec serve did not stop within 30 s of SIGTERM: killed%s", n.logTail())
	}
}

// logTail is the end of the node's log, for error messages.
func (n *node) logTail() string {
	data, err := os.ReadFile(n.logFile)
	if err != nil || len(data) == 0 {
		return ""
	}
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return "\nend of the node's log (" + n.logFile + "):\n" + string(data)
}

// scrapeGauge reads the largest value of metric in the Prometheus text
// exposition at url.
func scrapeGauge(url, metric string) (float64, bool) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	return parseGauge(resp.Body, metric)
}

// parseGauge reads the largest value of metric, whatever its labels, in a
// Prometheus text exposition. Lines it cannot read are skipped.
func parseGauge(r io.Reader, metric string) (float64, bool) {
	best, found := 0.0, false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue // a comment, or a longer name
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil || v != v { // NaN: no value
			continue
		}
		if !found || v > best {
			best, found = v, true
		}
	}
	return best, found
}

// The scenarios.

// scenario sends one request and checks its answer.
type scenario interface {
	// newWorker returns the request function of one client: its own
	// connection, its own buffers. full asks for a complete check of the
	// answer (the first one of each client); otherwise the status only.
	newWorker(id int) (do func(ctx context.Context, full bool) error, close func())
}

// tsaScenario posts RFC 3161 requests, each with a random imprint and nonce
// patched into a request built once with digitorus/timestamp.
type tsaScenario struct {
	url                       string
	template                  []byte
	digestOffset, nonceOffset int
}

const nonceLen = 8

func newTSAScenario(url string) (*tsaScenario, error) {
	digest := bytes.Repeat([]byte{0xd1}, sha256.Size)
	nonceBytes := bytes.Repeat([]byte{0x5e}, nonceLen)
	req := timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true, Nonce: new(big.Int).SetBytes(nonceBytes)}
	der, err := req.Marshal()
	if err != nil {
		return nil, err
	}
	s := &tsaScenario{url: url, template: der, digestOffset: bytes.Index(der, digest), nonceOffset: bytes.Index(der, nonceBytes)}
	if s.digestOffset < 0 || s.nonceOffset < 0 || bytes.Count(der, digest) != 1 || bytes.Count(der, nonceBytes) != 1 {
		return nil, errors.New("tsa: cannot find the imprint and nonce in the request template")
	}
	return s, nil
}

func (s *tsaScenario) newWorker(id int) (func(context.Context, bool) error, func()) {
	c, err := newConn(s.url, nil)
	if err != nil {
		return func(context.Context, bool) error { return err }, func() {}
	}
	path := urlPath(s.url)
	var seed [32]byte
	crand.Read(seed[:])
	rng := rand.NewChaCha8(seed)
	req := bytes.Clone(s.template)
	do := func(ctx context.Context, full bool) error {
		digest := req[s.digestOffset : s.digestOffset+sha256.Size]
		nonce := req[s.nonceOffset : s.nonceOffset+nonceLen]
		rng.Read(digest)
		rng.Read(nonce)
		nonce[0] = nonce[0]&0x7f | 0x01 // positive and minimal (DER)
		resp, err := send(ctx, c, path, "application/timestamp-query", req)
		if err != nil {
			return err
		}
		if full {
			return checkToken(resp.body, resp.evidenceID, digest, nonce)
		}
		return checkGranted(resp.body)
	}
	return do, c.close
}

// urlPath is the path of a URL that newConn accepted.
func urlPath(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Path == "" {
		return "/"
	}
	return u.RequestURI()
}

// checkGranted reads the PKIStatus of a TimeStampResp (RFC 3161 section
// 2.4.2) and requires granted or grantedWithMods with a token.
func checkGranted(body []byte) error {
	// TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken
	// ContentInfo OPTIONAL }; PKIStatusInfo ::= SEQUENCE { status INTEGER, ... }
	in := cryptobyte.String(body)
	var resp, info cryptobyte.String
	var status int64
	if !in.ReadASN1(&resp, cbasn1.SEQUENCE) || !resp.ReadASN1(&info, cbasn1.SEQUENCE) {
		return errors.New("tsa: reply is not a TimeStampResp")
	}
	if !info.ReadASN1Integer(&status) {
		return errors.New("tsa: reply status: not an INTEGER")
	}
	var token cryptobyte.String
	var tag cbasn1.Tag
	hasToken := resp.ReadAnyASN1Element(&token, &tag) && len(token) > 0
	if status > 1 || !hasToken {
		return fmt.Errorf("tsa: not granted: status %d", status)
	}
	return nil
}

// checkToken parses the whole reply and checks that it answers the request.
func checkToken(body []byte, evidenceID string, digest, nonce []byte) error {
	if err := checkGranted(body); err != nil {
		return err
	}
	ts, err := timestamp.ParseResponse(body)
	if err != nil {
		return fmt.Errorf("tsa: parse token: %w", err)
	}
	if !bytes.Equal(ts.HashedMessage, digest) || ts.Nonce == nil || ts.Nonce.Cmp(new(big.Int).SetBytes(nonce)) != 0 {
		return errors.New("tsa: the token does not answer the request (imprint or nonce)")
	}
	if evidenceID == "" {
		return errWarning("tsa: no PEC-Evidence-ID header in the reply: is the evidence log on?")
	}
	return nil
}

// errWarning is a full check's remark that does not make the answer wrong.
type errWarning string

func (e errWarning) Error() string { return string(e) }

// signScenario posts detached CAdES signature requests of 1 KiB documents.
type signScenario struct {
	url, profile string
	timestamp    bool
	tls          *tls.Config
	bodies       [][]byte
	digests      []string
}

func newSignScenario(url, profile string, timestamp bool, tlsCfg *tls.Config) *signScenario {
	s := &signScenario{url: url, profile: profile, timestamp: timestamp, tls: tlsCfg}
	doc := make([]byte, documentSize)
	for range 1024 {
		crand.Read(doc)
		body, err := json.Marshal(api.SignatureRequest{Profile: profile, Document: doc, Detached: true})
		if err != nil {
			panic(err) // a struct of strings, bytes and bools always encodes
		}
		sum := sha256.Sum256(doc)
		s.bodies = append(s.bodies, body)
		s.digests = append(s.digests, hex.EncodeToString(sum[:]))
	}
	return s
}

func (s *signScenario) newWorker(id int) (func(context.Context, bool) error, func()) {
	c, err := newConn(s.url, s.tls)
	if err != nil {
		return func(context.Context, bool) error { return err }, func() {}
	}
	path := urlPath(s.url)
	i := id * 7919 // clients start at different documents
	do := func(ctx context.Context, full bool) error {
		i = (i + 1) % len(s.bodies)
		r, err := send(ctx, c, path, "application/json", s.bodies[i])
		if err != nil || !full {
			return err
		}
		var resp api.SignatureResponse
		if err := json.Unmarshal(r.body, &resp); err != nil {
			return fmt.Errorf("sign: reply: %w", err)
		}
		switch {
		case resp.ID == "":
			return errors.New("sign: no evidence id in the reply")
		case resp.Profile != s.profile || resp.Format != "cades" || !resp.Detached || len(resp.Signature) == 0:
			return fmt.Errorf("sign: reply profile %q, format %q, detached %v, %d signature bytes", resp.Profile, resp.Format, resp.Detached, len(resp.Signature))
		case resp.Digest != s.digests[i]:
			return errors.New("sign: the signed digest is not the document's")
		case s.timestamp == resp.TimestampTime.IsZero():
			return fmt.Errorf("sign: profile %s: signature timestamp time %v", s.profile, resp.TimestampTime)
		}
		return nil
	}
	return do, c.close
}

// newClientTLS is partner-a's mutual TLS configuration, trusting the node's
// development root.
func newClientTLS(nodeDir string) (*tls.Config, error) {
	pki := filepath.Join(nodeDir, "pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "clients", "partner-a.pem"), filepath.Join(pki, "clients", "partner-a.key"))
	if err != nil {
		return nil, err
	}
	roots, err := loadCerts(filepath.Join(pki, "root-ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// send posts body to path on c and returns the answer when it is 2xx;
// any other status is an error that quotes the start of the body.
func send(ctx context.Context, c *conn, path, contentType string, body []byte) (response, error) {
	resp, err := c.post(ctx, path, contentType, body)
	if err != nil {
		return response{}, err
	}
	if resp.status/100 != 2 {
		return response{}, fmt.Errorf("HTTP %d: %.512s", resp.status, resp.body)
	}
	return resp, nil
}

// The load.

type result struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
	firstErr error
	warning  string
}

// runStep runs c clients, each sending one request after another on its own
// connection, for warmup (not measured) then d. Every client's first answer
// is checked in full. Latencies count only requests sent after the warm-up.
func runStep(ctx context.Context, s scenario, c int, warmup, d time.Duration) result {
	var (
		errs     atomic.Int64
		firstErr atomic.Pointer[error]
		warning  atomic.Pointer[string]
		mu       sync.Mutex
		samples  []time.Duration
		wg       sync.WaitGroup
	)
	start := time.Now()
	measureFrom := start.Add(warmup)
	deadline := measureFrom.Add(d)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(30*time.Second))
	defer cancel()
	for w := range c {
		wg.Go(func() {
			do, closeConn := s.newWorker(w)
			defer closeConn()
			local := make([]time.Duration, 0, 4096)
			for first := true; ; first = false {
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					break
				}
				err := do(ctx, first)
				if warn, ok := errors.AsType[errWarning](err); ok {
					msg := string(warn)
					warning.CompareAndSwap(nil, &msg)
					err = nil
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					if ctx.Err() == nil {
						time.Sleep(time.Millisecond) // no busy loop on a refusing node
					}
					continue
				}
				if !t0.Before(measureFrom) {
					local = append(local, time.Since(t0))
				}
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	slices.Sort(samples)
	r := result{rate: float64(len(samples)) / elapsed.Seconds(), errors: errs.Load()}
	if n := len(samples); n > 0 {
		r.p50 = samples[n/2]
		r.p99 = samples[min(n-1, (n*99+99)/100-1)]
	}
	if e := firstErr.Load(); e != nil {
		r.firstErr = *e
	}
	if w := warning.Load(); w != nil {
		r.warning = *w
	}
	return r
}

// The report.

func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| scenario | key | clients | req/s | raw sig/s | of raw | p50 | p99 | max seal delay | errors |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %d |\n",
			r.scenario, r.key, r.clients, thousands(r.result.rate), thousands(r.raw), percent(r.result.rate, r.raw),
			fmtDuration(r.result.p50), fmtDuration(r.result.p99), r.sealDelay, r.result.errors)
	}
}

func percent(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

// thousands writes v rounded, with comma separators: 28,601.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// fmtDuration writes three significant digits: 219 µs, 1.36 ms, 22.3 ms.
func fmtDuration(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case d == 0:
		return "0"
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 10_000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us < 100_000:
		return fmt.Sprintf("%.1f ms", us/1000)
	case us < 1_000_000:
		return fmt.Sprintf("%.0f ms", us/1000)
	}
	return fmt.Sprintf("%.2f s", us/1e6)
}

// loadAverage is the 1-minute load average of Linux, "?" elsewhere.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(data)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
