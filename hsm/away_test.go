package hsm_test

import (
	"context"
	"crypto"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"pec/hsm"
	"pec/internal/softhsmtest"
)

// How a test takes a real SoftHSM2 token away and puts it back: away
// returns the function that puts it back.
type takeAway struct {
	name string
	away func(t *testing.T, dir string) (back func())
}

var (
	// Out of the token directory: SoftHSM2 takes every directory in it for
	// a token, whatever its name.
	moveAway = takeAway{
		name: "moved away",
		away: func(t *testing.T, dir string) func() {
			elsewhere := filepath.Join(t.TempDir(), filepath.Base(dir))
			mustDo(t, os.Rename(dir, elsewhere))
			var once sync.Once
			back := func() { once.Do(func() { mustDo(t, os.Rename(elsewhere, dir)) }) }
			t.Cleanup(func() { once.Do(func() { os.Rename(elsewhere, dir) }) })
			return back
		},
	}
	// Root reads files whatever their mode: see TestTokenUnreadableAndBack.
	makeUnreadable = takeAway{
		name: "unreadable",
		away: func(t *testing.T, dir string) func() {
			mustDo(t, os.Chmod(dir, 0))
			t.Cleanup(func() { os.Chmod(dir, 0o700) })
			return func() { mustDo(t, os.Chmod(dir, 0o700)) }
		},
	}
)

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// lineCounter counts the log lines written, and keeps them.
type lineCounter struct{ syncBuffer }

func (c *lineCounter) lines() []string {
	s := strings.TrimSpace(c.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TestTokenAwayAndBack takes a real SoftHSM2 token away while goroutines
// sign in a loop with keys handed out before, then puts it back. While it
// is away, signatures fail with ErrUnavailable (never ErrKeyNotFound) and
// Ready says so; once it is back, the same Signer values sign again within
// the retry bound, without a restart; the outage is logged twice (down,
// back), not once per failed signature.
//
// Not parallel: the recovery re-initialises the module that every test of
// this binary shares.
func TestTokenAwayAndBack(t *testing.T) {
	awayAndBack(t, moveAway)
}

// TestTokenUnreadableAndBack: the same with the token directory made
// unreadable (mode 000) and readable again. Root reads it whatever its
// mode, so as root the test runs again in a child process as nobody.
func TestTokenUnreadableAndBack(t *testing.T) {
	if os.Geteuid() == 0 {
		runAsNobody(t, "^TestTokenUnreadableAndBack$")
		return
	}
	awayAndBack(t, makeUnreadable)
}

func awayAndBack(t *testing.T, how takeAway) {
	cfg := softhsmtest.NewToken(t, "away")
	var logs lineCounter
	reg := prometheus.NewRegistry()
	ks := open(t, cfg, hsm.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registry: reg})
	ec, err := ks.GenerateKey(t.Context(), "away-ec", hsm.ECP256)
	mustDo(t, err)
	rsaKey, err := ks.GenerateKey(t.Context(), "away-rsa", hsm.RSA2048)
	mustDo(t, err)
	signers := []crypto.Signer{ec, rsaKey}
	dir := softhsmtest.TokenDir(t, cfg)

	var ok, unavailable atomic.Int64
	var lastOK atomic.Pointer[time.Time]
	var other sync.Map // unexpected errors
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(30 * time.Second) // the loops stop by themselves
	for g := range 4 {
		wg.Go(func() {
			s := signers[g%2]
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				d := digest(crypto.SHA256, "loop")
				sig, err := s.Sign(nil, d, crypto.SHA256)
				switch {
				case err == nil:
					if verr := verify(s.Public(), d, sig, crypto.SHA256); verr != nil {
						other.Store(verr.Error(), true)
					}
					ok.Add(1)
					now := time.Now()
					lastOK.Store(&now)
				case errors.Is(err, hsm.ErrUnavailable) && !errors.Is(err, hsm.ErrKeyNotFound):
					unavailable.Add(1)
					time.Sleep(time.Millisecond) // an edge answers 503; it does not spin
				default:
					other.Store(err.Error(), true)
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	waitFor(t, 5*time.Second, "signatures before", func() bool { return ok.Load() >= 20 })
	if err := ks.Ready(); err != nil {
		t.Fatalf("Ready before: %v", err)
	}

	putBack := how.away(t, dir)
	waitFor(t, 5*time.Second, "signatures failing with ErrUnavailable", func() bool { return unavailable.Load() >= 20 })
	err = ks.Ready()
	if !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("Ready while the token is %s: %v, want ErrUnavailable", how.name, err)
	}
	if got := testutil.ToFloat64(availableGauge(t, reg, cfg.TokenLabel)); got != 0 {
		t.Errorf("pec_hsm_available = %v while the token is away, want 0", got)
	}
	// A key never handed out is unavailable too, not "not found".
	if _, err := ks.Signer(t.Context(), "never-there"); !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Signer while the token is away: %v, want ErrUnavailable", err)
	}
	time.Sleep(500 * time.Millisecond) // some retries, all failing
	okAway := ok.Load()

	putBack()
	back := time.Now()
	// The bound: the retry interval (2 s at most) plus one attempt.
	waitFor(t, 4*time.Second, "signatures again", func() bool {
		p := lastOK.Load()
		return p != nil && p.After(back) && ok.Load() > okAway
	})
	t.Logf("%s: back %v after the token was; %d signatures failed with ErrUnavailable meanwhile",
		how.name, time.Since(back).Round(time.Millisecond), unavailable.Load())
	waitFor(t, 2*time.Second, "Ready", func() bool { return ks.Ready() == nil })
	close(stop)
	wg.Wait()
	stop = make(chan struct{})

	other.Range(func(k, _ any) bool {
		t.Errorf("unexpected error: %v", k)
		return true
	})
	for _, s := range signers { // the values handed out before
		d := digest(crypto.SHA256, "after")
		sig, err := s.Sign(nil, d, crypto.SHA256)
		mustDo(t, err)
		mustDo(t, verify(s.Public(), d, sig, crypto.SHA256))
	}
	if got := testutil.ToFloat64(availableGauge(t, reg, cfg.TokenLabel)); got != 1 {
		t.Errorf("pec_hsm_available = %v once the token is back, want 1", got)
	}
	// The retries re-initialise the module with backoff: about 1 s away
	// makes a handful (50, 100, 200, 400 ms ...), not one per failure.
	reinits := counterValue(t, reg, "pec_hsm_reinit_total", "result", "ok") + max(0, counterValue(t, reg, "pec_hsm_reinit_total", "result", "error"))
	if reinits < 1 || reinits > 12 {
		t.Errorf("pec_hsm_reinit_total = %v for one outage of about 1 s, want 1 to 12", reinits)
	}
	lines := logs.lines()
	if n := countLines(lines, "token unavailable"); n != 1 {
		t.Errorf("%d lines say the token is unavailable, want 1", n)
	}
	if n := countLines(lines, "token available again"); n != 1 {
		t.Errorf("%d lines say the token is available again, want 1", n)
	}
	// Besides the two: the token opened, the keys generated, and the
	// recoveries of the keys' handles by the first callers to meet the
	// fault (one or two a key, as the goroutines interleave). Never one
	// per failure: thousands of signatures fail meanwhile.
	if len(lines) > 12 {
		t.Errorf("%d log lines for one outage (%d failed signatures):\n%s", len(lines), unavailable.Load(), strings.Join(lines, "\n"))
	}
}

// TestReadyProbesIdleToken: a token taken away while nothing signs shows in
// Ready all the same, and Ready turns nil again once it is back, by the
// recovery its probe started.
func TestReadyProbesIdleToken(t *testing.T) {
	cfg := softhsmtest.NewToken(t, "idle")
	ks := open(t, cfg, hsm.Options{})
	signer, err := ks.GenerateKey(t.Context(), "idle", hsm.ECP256)
	mustDo(t, err)
	mustDo(t, ks.Ready())
	putBack := moveAway.away(t, softhsmtest.TokenDir(t, cfg))
	// Ready probes at most once a second.
	waitFor(t, 3*time.Second, "Ready to fail", func() bool { return errors.Is(ks.Ready(), hsm.ErrUnavailable) })
	if err := ks.Ready(); !strings.Contains(err.Error(), cfg.TokenLabel) {
		t.Errorf("Ready does not name the token: %v", err)
	}
	putBack()
	waitFor(t, 4*time.Second, "Ready", func() bool { return ks.Ready() == nil })
	mustSign(t, signer)
}

// TestLookupOnVanishedToken: when the first call to meet a token gone
// unnoticed looks up a label, the answer is ErrUnavailable, not
// ErrKeyNotFound: the token is asked whether it is still there.
func TestLookupOnVanishedToken(t *testing.T) {
	cfg := softhsmtest.NewToken(t, "lookup")
	ks := open(t, cfg, hsm.Options{})
	_, err := ks.GenerateKey(t.Context(), "there", hsm.ECP256)
	mustDo(t, err)
	if _, err := ks.Signer(t.Context(), "never-there"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("Signer of an unknown label: %v, want ErrKeyNotFound", err)
	}
	putBack := moveAway.away(t, softhsmtest.TokenDir(t, cfg))
	if _, err := ks.Signer(t.Context(), "never-there"); !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Signer, the token gone unnoticed: %v, want ErrUnavailable", err)
	}
	putBack()
	waitFor(t, 4*time.Second, "Ready", func() bool { return ks.Ready() == nil })
	if _, err := ks.Signer(t.Context(), "there"); err != nil {
		t.Errorf("Signer once the token is back: %v", err)
	}
	if _, err := ks.Signer(t.Context(), "never-there"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Signer of an unknown label once the token is back: %v, want ErrKeyNotFound", err)
	}
}

// TestKeyGoneAlone: a key handed out that is no longer on a token that is
// otherwise there (its object files moved away) is unavailable alone (once
// its session copy has signed for KeyCheckEvery),
// named by Ready, while the token's other key keeps signing; both sign
// again once the files are back.
func TestKeyGoneAlone(t *testing.T) {
	cfg := softhsmtest.NewToken(t, "gone")
	ks := open(t, cfg, hsm.Options{})
	keep, err := ks.GenerateKey(t.Context(), "keep", hsm.ECP256)
	mustDo(t, err)
	dir := softhsmtest.TokenDir(t, cfg)
	before := files(t, dir)
	lose, err := ks.GenerateKey(t.Context(), "lose", hsm.ECP256)
	mustDo(t, err)
	mustSign(t, keep)
	mustSign(t, lose)
	stash := t.TempDir()
	var moved []string
	for name := range files(t, dir) {
		if !before[name] { // lose's objects
			mustDo(t, os.Rename(filepath.Join(dir, name), filepath.Join(stash, name)))
			moved = append(moved, name)
		}
	}
	if len(moved) == 0 {
		t.Fatal("GenerateKey added no file to the token directory")
	}
	// The key signs from its session copy for KeyCheckEvery at most, then
	// from the token object, which is not there.
	time.Sleep(hsm.KeyCheckEvery)
	_, err = lose.Sign(nil, digest(crypto.SHA256, "x"), crypto.SHA256)
	if !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("Sign with the key's files away: %v, want ErrUnavailable", err)
	}
	mustSign(t, keep)
	err = ks.Ready()
	if !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), `"lose"`) || strings.Contains(err.Error(), `"keep"`) {
		t.Fatalf("Ready with one key away: %v, want ErrUnavailable naming \"lose\" alone", err)
	}
	for _, name := range moved {
		mustDo(t, os.Rename(filepath.Join(stash, name), filepath.Join(dir, name)))
	}
	waitFor(t, 4*time.Second, "both keys", func() bool {
		_, err := lose.Sign(nil, digest(crypto.SHA256, "x"), crypto.SHA256)
		return err == nil && ks.Ready() == nil
	})
	mustSign(t, keep)
}

func files(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	mustDo(t, err)
	m := make(map[string]bool)
	for _, e := range entries {
		m[e.Name()] = true
	}
	return m
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countLines(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func availableGauge(t *testing.T, reg *prometheus.Registry, token string) prometheus.Collector {
	t.Helper()
	return gaugeOf{reg: reg, name: "pec_hsm_available", label: "token", value: token}
}

// gaugeOf is one series of a gathered gauge vector, as a Collector that
// testutil.ToFloat64 reads.
type gaugeOf struct {
	reg                *prometheus.Registry
	name, label, value string
}

func (g gaugeOf) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc(g.name, "copy", nil, nil)
}

func (g gaugeOf) Collect(ch chan<- prometheus.Metric) {
	v := seriesValue(g.reg, g.name, g.label, g.value)
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "copy", nil, nil), prometheus.GaugeValue, v)
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	return seriesValue(reg, name, label, value)
}

func seriesValue(reg *prometheus.Registry, name, label, value string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.GetGauge() != nil {
						return m.GetGauge().GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// runAsNobody runs the test binary again, as the user nobody, for the tests
// named by pattern: their own TestMain makes their own SoftHSM2
// configuration and tokens, owned by nobody.
func runAsNobody(t *testing.T, pattern string) {
	t.Helper()
	self, err := os.Executable()
	mustDo(t, err)
	dir, err := os.MkdirTemp("", "hsm-nobody-")
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	mustDo(t, os.Chown(dir, 65534, 65534))
	bin := filepath.Join(dir, "hsm.test")
	mustDo(t, copyFile(self, bin))
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run="+pattern, "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("as nobody: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS") {
		t.Fatal("as nobody: no test passed")
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
