// Command tsaload measures the PEC time-stamping authority over loopback HTTP:
// timestamps per second and p50/p99 latency at several concurrencies, for a
// software ECDSA P-256 key, a software RSA-2048 key and SoftHSM2 keys, each
// beside the raw crypto.Signer rate of the same key measured in the same run.
//
// The server is the production path — gateway.NewTSAHandler in front of
// tsa.Authority with a serial file and a journal that fsyncs before replying
// — and the load generator runs in the same process, so its CPU counts
// against the rate, as it would on a 2-core machine.
//
//	go run ./bench/tsaload -duration 5s -concurrency 1,8,64
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitorus/timestamp"

	"pec/gateway"
	"pec/hsm"
	"pec/internal/devpki"
	"pec/tsa"
)

var withJournal *bool

const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	concList := flag.String("concurrency", "1,8,64", "comma-separated client concurrencies")
	keyList := flag.String("keys", "p256,rsa2048,softhsm-p256,softhsm-rsa2048", "keys to measure: p256, rsa2048, softhsm-p256, softhsm-rsa2048")
	defaultProcs := runtime.GOMAXPROCS(0)
	servingProcs := flag.Int("gomaxprocs", defaultProcs+1, "GOMAXPROCS of the TSA under load (pec serve uses the default plus one)")
	withJournal = flag.Bool("journal", true, "record every token durably before replying, as pec serve does (false: measure without it)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the load runs to this file")
	flag.Parse()

	var concs []int
	for _, s := range strings.Split(*concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bad -concurrency %q", *concList)
		}
		concs = append(concs, n)
	}
	work, err := os.MkdirTemp("", "tsaload-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	var profile *os.File
	if *cpuProfile != "" {
		if profile, err = os.Create(*cpuProfile); err != nil {
			log.Fatal(err)
		}
		defer profile.Close()
	}
	fmt.Printf("tsaload: %d CPUs, raw rates at GOMAXPROCS=%d, TSA at GOMAXPROCS=%d, journal %v, %s per measurement, %s\n",
		runtime.NumCPU(), defaultProcs, *servingProcs, *withJournal, *duration, runtime.Version())
	fmt.Printf("%-16s %5s %10s %10s %10s %8s %9s %9s\n", "key", "conc", "ts/s", "raw-par/s", "raw-1/s", "of-raw", "p50", "p99")
	for _, name := range strings.Split(*keyList, ",") {
		signer, closeKey, err := openKey(context.Background(), strings.TrimSpace(name), work)
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		// The raw rates use the machine as it is; the TSA then runs with
		// one P more, as pec serve does (see setServingProcs in cmd/pec).
		runtime.GOMAXPROCS(defaultProcs)
		rawPar := rawRate(signer, defaultProcs*2, *duration)
		raw1 := rawRate(signer, 1, *duration)
		runtime.GOMAXPROCS(*servingProcs)
		srv, url, err := startTSA(signer, filepath.Join(work, name))
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		for _, c := range concs {
			if profile != nil { // the load runs only, not the raw-rate runs
				if err := pprof.StartCPUProfile(profile); err != nil {
					log.Fatal(err)
				}
			}
			r := load(url, c, *duration)
			if profile != nil {
				pprof.StopCPUProfile()
			}
			fmt.Printf("%-16s %5d %10.0f %10.0f %10.0f %7.0f%% %9s %9s\n", name, c, r.rate, rawPar, raw1,
				100*r.rate/rawPar, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
			if r.errors > 0 {
				fmt.Printf("  %d errors (first: %v)\n", r.errors, r.firstErr)
			}
		}
		srv.Close()
		closeKey()
	}
}

// openKey returns the signer of one scenario.
func openKey(ctx context.Context, name, work string) (crypto.Signer, func(), error) {
	switch name {
	case "p256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k, func() {}, err
	case "rsa2048":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		return k, func() {}, err
	case "softhsm-p256", "softhsm-rsa2048":
		keys, err := softHSM(ctx, work)
		if err != nil {
			return nil, nil, err
		}
		kt := hsm.ECP256
		if name == "softhsm-rsa2048" {
			kt = hsm.RSA2048
		}
		s, err := keys.GenerateKey(ctx, name, kt)
		if err != nil {
			return nil, nil, err
		}
		return s, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unknown key %q", name)
}

var (
	softOnce sync.Once
	softKeys hsm.KeyStore
	softErr  error
)

// softHSM creates one SoftHSM2 token for the run, in its own directory.
func softHSM(ctx context.Context, work string) (hsm.KeyStore, error) {
	softOnce.Do(func() {
		dir := filepath.Join(work, "softhsm")
		if softErr = os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); softErr != nil {
			return
		}
		conf := filepath.Join(dir, "softhsm2.conf")
		text := "directories.tokendir = " + filepath.Join(dir, "tokens") + "\nobjectstore.backend = file\nlog.level = ERROR\n"
		if softErr = os.WriteFile(conf, []byte(text), 0o600); softErr != nil {
			return
		}
		os.Setenv("SOFTHSM2_CONF", conf)
		pinFile := filepath.Join(dir, "pin")
		if softErr = os.WriteFile(pinFile, []byte("bench-pin-1234\n"), 0o600); softErr != nil {
			return
		}
		if _, softErr = hsm.InitToken(softHSMModule, "bench", "bench-so-1234", "bench-pin-1234"); softErr != nil {
			return
		}
		softKeys, softErr = hsm.Open(ctx, hsm.Config{Module: softHSMModule, TokenLabel: "bench", PINFile: pinFile}, hsm.Options{})
	})
	return softKeys, softErr
}

// rawRate is the signature rate of signer with n goroutines signing SHA-256
// digests: the ceiling no TSA using this key can pass.
func rawRate(signer crypto.Signer, n int, d time.Duration) float64 {
	digest := sha256.Sum256([]byte("tsaload"))
	var count atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					log.Fatalf("raw sign: %v", err)
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(count.Load()) / time.Since(start).Seconds()
}

// startTSA serves the production handler on a loopback port.
func startTSA(signer crypto.Signer, dir string) (*http.Server, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	ca, err := devpki.NewRootCA(rootKey, "tsaload root", now)
	if err != nil {
		return nil, "", err
	}
	cert, err := ca.IssueTSA(signer.Public(), "tsaload TSA", now)
	if err != nil {
		return nil, "", err
	}
	cfg := tsa.Config{
		KeyLabel:        "bench",
		PolicyOID:       "2.999.3161.1",
		Accuracy:        time.Second,
		MaxRequestBytes: 64 << 10,
		SerialFile:      filepath.Join(dir, "serials"),
		JournalFile:     filepath.Join(dir, "journal.jsonl"),
	}
	serials, err := tsa.OpenFileSerials(cfg.SerialFile, 0)
	if err != nil {
		return nil, "", err
	}
	journal, err := tsa.OpenJournal(cfg.JournalFile)
	if err != nil {
		return nil, "", err
	}
	opts := tsa.Options{Recorder: journal}
	if !*withJournal {
		opts.Recorder = nil
	}
	a, err := tsa.New(cfg, signer, []*x509.Certificate{cert, ca.Cert}, serials, opts)
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: gateway.NewTSAHandler(a, cfg.MaxRequestBytes, gateway.Options{}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, "http://" + ln.Addr().String() + "/tsa", nil
}

type result struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
	firstErr error
}

// load sends requests from c clients for d and measures the rate of good
// replies. Requests are built beforehand (each with its own nonce and
// imprint), as a client would build them before sending.
func load(url string, c int, d time.Duration) result {
	reqs := make([][]byte, 4096)
	for i := range reqs {
		sum := sha256.Sum256([]byte(strconv.Itoa(i)))
		nonce, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
		r := timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: sum[:], Certificates: true, Nonce: nonce}
		der, err := r.Marshal()
		if err != nil {
			log.Fatal(err)
		}
		reqs[i] = der
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c, MaxConnsPerHost: c}}
	defer client.CloseIdleConnections()

	// Warm up the connections.
	send(client, url, reqs[0])

	var (
		count, errs atomic.Int64
		firstErr    atomic.Value
		mu          sync.Mutex
		latencies   []time.Duration
		wg          sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := range c {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1<<14)
			for i := w; time.Now().Before(deadline); i += c {
				t0 := time.Now()
				if err := send(client, url, reqs[i%len(reqs)]); err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				local = append(local, time.Since(t0))
				count.Add(1)
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	r := result{rate: float64(count.Load()) / elapsed.Seconds(), errors: errs.Load()}
	if len(latencies) > 0 {
		r.p50 = latencies[len(latencies)/2]
		r.p99 = latencies[len(latencies)*99/100]
	}
	if e, ok := firstErr.Load().(error); ok {
		r.firstErr = e
	}
	return r
}

// grantedPrefix: a TimeStampResp whose PKIStatusInfo is granted (0) starts
// SEQUENCE { SEQUENCE { INTEGER 0 ...
var statusGranted = []byte{0x02, 0x01, 0x00}

func send(client *http.Client, url string, req []byte) error {
	resp, err := client.Post(url, "application/timestamp-query", bytes.NewReader(req))
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(body, &raw); err != nil {
		return err
	}
	if !bytes.Contains(body[:min(len(body), 12)], statusGranted) {
		return errors.New("not granted")
	}
	return nil
}
