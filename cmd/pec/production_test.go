package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"pec/internal/devpki"
)

// The operator's files of configs/ (README: Running in production).
const (
	productionConfig = "../../configs/pec.production.yaml"
	productionUnit   = "../../configs/pec.service"
)

// productionRoots are where configs/pec.production.yaml and pec.service
// put things on the operator's machine.
var productionRoots = []string{"/etc/pec", "/var/lib/pec", "/usr/safenet"}

// TestProductionConfig: the production pec.yaml loads with LoadConfig once
// the files it names exist (its paths moved under a temporary root), its
// only faults as it stands being files that are not on this machine; and
// it is what production needs: a real HSM module and a PIN file, NTP
// servers, the evidence log on PostgreSQL, JSON logs, no development CA,
// revocation required and fetched, every path absolute.
func TestProductionConfig(t *testing.T) {
	src, err := os.ReadFile(productionConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(productionConfig); err != nil {
		for line := range strings.Lines(err.Error()) {
			if !strings.Contains(line, "no such file or directory") {
				t.Errorf("fault of %s that is not a missing file: %s", productionConfig, line)
			}
		}
	}

	root := t.TempDir()
	moved := string(src)
	for _, r := range productionRoots {
		moved = strings.ReplaceAll(moved, " "+r, " "+root+r)
		moved = strings.ReplaceAll(moved, "["+r, "["+root+r)
		moved = strings.ReplaceAll(moved, ", "+r, ", "+root+r)
	}
	// Every file it names, made: certificates of a throw-away root, the
	// PIN, the module (only its presence is checked before it is loaded).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devpki.NewRootCA(key, "Test root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	pathRE := regexp.MustCompile(regexp.QuoteMeta(root) + `/(etc|usr)/[^\s,\]"]+`)
	for line := range strings.Lines(moved) {
		values, _, _ := strings.Cut(line, "#") // not the paths of the comments
		named = append(named, pathRE.FindAllString(values, -1)...)
	}
	if len(named) < 10 {
		t.Fatalf("only %d files named under %s: the paths were not moved", len(named), root)
	}
	for _, f := range named {
		content := devpki.CertPEM(ca.Cert)
		if strings.HasSuffix(f, "hsm-pin") {
			content = []byte("1234\n")
		}
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(root, "etc", "pec", "pec.yaml")
	if err := os.WriteFile(path, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("the production pec.yaml, its files present, is refused:\n%v", err)
	}

	for _, p := range []struct{ field, path string }{
		{"data_dir", cfg.DataDir}, {"tls.cert_file", cfg.TLS.CertFile}, {"tls.client_roots", cfg.TLS.ClientRoots},
		{"hsm.module", cfg.HSM.Module}, {"hsm.pin_file", cfg.HSM.PINFile},
		{"tsa.cert_file", cfg.TSA.CertFile}, {"tsa.serial_file", cfg.TSA.SerialFile},
		{"proof.cert_file", cfg.Proof.CertFile}, {"proof.checkpoint_file", cfg.Proof.CheckpointFile},
		{"directory.file", cfg.Directory.File},
	} {
		if !strings.HasPrefix(p.path, root+"/") {
			t.Errorf("%s = %q: not one of the absolute paths of %v", p.field, p.path, productionRoots)
		}
	}
	switch {
	case cfg.DevCA.Configured():
		t.Error("devca: a development CA in production")
	case cfg.HSM.Module == "" || strings.Contains(cfg.HSM.Module, "softhsm"):
		t.Errorf("hsm.module = %q: not a hardware HSM's", cfg.HSM.Module)
	case cfg.HSM.PINFile == "" || cfg.HSM.PINEnv != "" || cfg.HSM.SoftHSM2Conf != "":
		t.Errorf("hsm: %+v: the PIN from a file, no SoftHSM2", cfg.HSM)
	case len(cfg.TSA.Clock.NTPServers) < 2:
		t.Errorf("tsa.clock.ntp_servers = %v: a TSA checks its clock against several", cfg.TSA.Clock.NTPServers)
	case cfg.Proof.PostgresURLEnv == "" || cfg.Proof.File != "":
		t.Errorf("proof: postgres_url_env %q, file %q: the log on PostgreSQL", cfg.Proof.PostgresURLEnv, cfg.Proof.File)
	case cfg.Log.Format != "json":
		t.Errorf("log.format = %q: journald keeps JSON lines", cfg.Log.Format)
	case cfg.CertValidation.Fetch.Offline:
		t.Error("certvalidation.fetch.offline: revocation data must be fetched")
	case strings.Contains(cfg.TSA.PolicyOID, devPolicyOID):
		t.Error("tsa.policy_oid: the development policy")
	}
	for _, name := range []string{"clientAuth", "documentSigning", "timeStamping"} {
		if p, ok := cfg.CertValidation.Purposes[name]; !ok || p.Revocation != "require" || len(p.Roots) == 0 {
			t.Errorf("certvalidation.purposes.%s = %+v: its own roots, revocation required", name, p)
		}
	}
	if cfg.Listen.Ops == "" || !strings.HasPrefix(cfg.Listen.Ops, "127.0.0.1:") {
		t.Errorf("listen.ops = %q: loopback", cfg.Listen.Ops)
	}
}

// unitSettings reads a systemd unit: section.key → values, in order (an
// empty assignment is kept, as systemd reads it: a reset).
func unitSettings(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %q", line)
			}
			out[section+"."+strings.TrimSpace(k)] = append(out[section+"."+strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return out
}

// TestProductionUnit: pec.service runs the production config as user pec,
// restarts on failure (not on a configuration fault), stops with SIGTERM,
// is hardened, and lets the node write its data directory, where every
// file the config makes the node write is; systemd-analyze verify finds
// nothing to say of it.
func TestProductionUnit(t *testing.T) {
	data, err := os.ReadFile(productionUnit)
	if err != nil {
		t.Fatal(err)
	}
	u := unitSettings(t, data)
	for key, want := range map[string]string{
		"Service.User":                     "pec",
		"Service.ExecStart":                "/usr/local/bin/pec serve --config /etc/pec/pec.yaml",
		"Service.Restart":                  "on-failure",
		"Service.RestartPreventExitStatus": "2",
		"Service.KillSignal":               "SIGTERM",
		"Service.NoNewPrivileges":          "yes",
		"Service.ProtectSystem":            "strict",
		"Service.PrivateTmp":               "yes",
		"Service.CapabilityBoundingSet":    "",
		"Service.AmbientCapabilities":      "",
		"Install.WantedBy":                 "multi-user.target",
	} {
		if got, ok := u[key]; !ok || got[len(got)-1] != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	// pec serve takes rotated keys on SIGHUP (reload.go).
	if got := u["Service.ExecReload"]; len(got) == 0 || got[len(got)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload = %q, want SIGHUP", got)
	}
	cfg, err := parseConfig(mustRead(t, productionConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolvePaths("/etc/pec")
	rw := strings.Fields(strings.Join(u["Service.ReadWritePaths"], " "))
	for _, f := range []string{cfg.DataDir, cfg.TSA.SerialFile, cfg.Proof.CheckpointFile, filepath.Join(cfg.DataDir, "directory.json")} {
		if !slices.ContainsFunc(rw, func(d string) bool { return f == d || strings.HasPrefix(f, d+"/") }) {
			t.Errorf("%s is written by the node, outside ReadWritePaths %v", f, rw)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit is not verified by systemd (apt-get install systemd)")
		return
	}
	// verify wants ExecStart's binary: this test's stands in for pec.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "pec.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(data, []byte("/usr/local/bin/pec "), []byte(self+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", productionUnit, err, out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
