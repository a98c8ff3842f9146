package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"

	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"pec/internal/devpki"
	"pec/proof"
)

// hup ARG METRICS-URL: send SIGHUP to the `pec serve` that this test
// started (a child of the test process) with ARG among its arguments, as
// an operator's kill -HUP does, then wait (30 s at most) until the node's
// /metrics counts one more reload (pec_keys_reloads_total), and fail if it
// counts a failed one. testscript's kill knows INT and KILL only.
func cmdHUP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: hup ARG METRICS-URL")
	}
	before := reloads(ts, args[1])
	pids := childServes(ts, args[0])
	if len(pids) != 1 {
		ts.Fatalf("hup: %d pec serve children with argument %q", len(pids), args[0])
	}
	ts.Check(syscall.Kill(pids[0], syscall.SIGHUP))
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := reloads(ts, args[1])
		if now["failed"] > before["failed"] {
			ts.Fatalf("hup: the reload failed (see the node's log)")
		}
		if now["ok"] > before["ok"] {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("hup: no reload within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reloads reads pec_keys_reloads_total by result from a /metrics page.
func reloads(ts *testscript.TestScript, url string) map[string]float64 {
	resp, err := http.Get(url)
	ts.Check(err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, `pec_keys_reloads_total{result="`)
		if !ok {
			continue
		}
		result, value, _ := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(value, 64)
		ts.Check(err)
		out[result] = v
	}
	return out
}

// childServes are the pids of this process's children running `pec serve`
// with arg among their arguments, in this script's directory (the
// scripts run in parallel, as children of one process).
func childServes(ts *testscript.TestScript, arg string) []int {
	work, err := filepath.EvalSymlinks(ts.Getenv("WORK"))
	ts.Check(err)
	entries, err := os.ReadDir("/proc")
	ts.Check(err)
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, the last ')' ends it.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(self) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && cwd == work && slices.Contains(argv, "serve") && slices.Contains(argv, arg) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// FuzzKeyState: keys.json is read or refused with an error, never a
// panic; what is read has a valid slot name and, for every generation
// after the first, an evidence id that a rotation record accepts.
func FuzzKeyState(f *testing.F) {
	gen0 := `{"label":"tsa","cert_file":"pki/tsa.pem","cert_sha256":"` + strings.Repeat("ab", 32) + `","cert_subject":"CN=TSA"}`
	gen1 := `{"label":"tsa.20261201T101500Z","cert_file":"pki/tsa.20261201T101500Z.pem","cert_sha256":"` + strings.Repeat("cd", 32) +
		`","cert_subject":"CN=TSA","at":"2026-12-01T10:15:00Z","by":"op","via":"devca","evidence":"01a2318c2caafe70c79c4e1771f903b4"}`
	f.Add([]byte(`{"format":"pec-keys/1","keys":{"tsa":{"generations":[` + gen0 + `,` + gen1 + `]}}}`))
	f.Add([]byte(`{"format":"pec-keys/1","keys":{"signing/default":{"generations":[],"pending":{"label":"signing.x","created":"2026-12-01T10:15:00Z","csr_sha256":""}}}}`))
	f.Add([]byte(`{"format":"pec-keys/1","keys":{"nosuch":null}}`))
	f.Add([]byte(`{"format":"pec-keys/2"}`))
	f.Add([]byte(`{}{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseKeyState(data)
		if err != nil {
			return
		}
		for slot, s := range st.Keys {
			if !validSlot(slot) {
				t.Fatalf("read slot %q", slot)
			}
			for i := 1; i < len(s.Generations); i++ {
				if _, err := rotationRecord(slot, s, i); err != nil {
					t.Fatalf("generation %d of %s read, but its record is refused: %v", i, slot, err)
				}
			}
		}
	})
}

// FuzzLogCertificates: what a node answers at /log-certificates is read
// or refused with an error, never a panic; a certificate found is an
// evidence log's, of a key the note names.
func FuzzLogCertificates(f *testing.F) {
	signer := fuzzSigner(f)
	block, _ := pem.Decode([]byte(fuzzLogKey))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	ca, err := devpki.NewRootCA(key.(*ecdsa.PrivateKey), "fuzz root", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	cert, err := ca.Issue(&x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "log"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{proof.OIDEvidenceLog},
	}, signer.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(devpki.CertPEM(cert, ca.Cert), signer.KeyID())
	f.Add(devpki.CertPEM(ca.Cert), signer.KeyID())
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), uint32(0))
	f.Add([]byte("not PEM"), uint32(1))
	f.Fuzz(func(t *testing.T, data []byte, id uint32) {
		chain, err := findLogCert(data, "pec.test/proof", []uint32{id})
		if err != nil {
			return
		}
		v, verr := proof.NewNoteVerifier("pec.test/proof", chain[0].PublicKey)
		if !proof.IsEvidenceLogCertificate(chain[0]) || verr != nil || v.KeyID() != id {
			t.Fatalf("found %q, not an evidence log certificate of key %08x", chain[0].Subject, id)
		}
	})
}
