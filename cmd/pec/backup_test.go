package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pec/proof"
)

// startNodeOps is startNode with the ops listener on a known port.
func startNodeOps(t *testing.T, config string) (*testNode, string) {
	t.Helper()
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	n := &testNode{tsa: fmt.Sprintf("127.0.0.1:%d", ports[0]), api: fmt.Sprintf("127.0.0.1:%d", ports[1]), done: make(chan struct{})}
	ops := fmt.Sprintf("127.0.0.1:%d", ports[2])
	n.cmd = exec.Command(os.Args[0], "serve", "--config", config, "--listen", "tsa="+n.tsa, "--listen", "api="+n.api, "--listen", "ops="+ops)
	n.cmd.Env = append(os.Environ(), childEnv+"=1")
	n.cmd.Stderr = &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() { n.cmd.Process.Kill(); <-n.done })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := plainHTTP.Get("http://" + ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return n, "http://" + ops
			}
		}
		select {
		case <-n.done:
			t.Fatalf("pec serve exited before it was ready:\n%s", n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pec serve not ready within 30 s:\n%s", n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBackupUnderLoad takes three backups of a node serving a bounded load
// of time-stamp requests (8 clients), through `pec backup` and the ops
// listener; each backup, restored onto the stopped node's wiped data
// directory, holds every token's evidence that a client received before
// the backup began, and audits; started, the restored node seals them
// all.
func TestBackupUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pec serve under load")
	}
	dir := filepath.Join(t.TempDir(), "node")
	if code := run([]string{"init", "--dir", dir}, nil, io.Discard, io.Discard); code != exitOK {
		t.Fatalf("pec init: exit %d", code)
	}
	config := filepath.Join(dir, "pec.yaml")
	node, ops := startNodeOps(t, config)

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id, _, err := node.timestamp()
				if err != nil {
					t.Errorf("time-stamp: %v", err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	type taken struct {
		file   string
		before []string
	}
	var backups []taken
	for i := range 3 {
		time.Sleep(400 * time.Millisecond)
		mu.Lock()
		before := append([]string(nil), acked...)
		mu.Unlock()
		file := filepath.Join(t.TempDir(), fmt.Sprintf("b%d.pecbackup", i))
		var out, errOut bytes.Buffer
		if code := run([]string{"backup", "--config", config, "--ops", ops, "-o", file}, nil, &out, &errOut); code != exitOK {
			t.Fatalf("pec backup: exit %d: %s", code, errOut.String())
		}
		t.Logf("backup %d, after %d answers: %s", i, len(before), strings.TrimSpace(out.String()))
		backups = append(backups, taken{file, before})
	}
	close(stop)
	wg.Wait()
	node.terminate(t)

	cfg, err := LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range backups {
		if err := os.RemoveAll(cfg.DataDir); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if code := run([]string{"restore", "--config", config, b.file}, nil, &out, &errOut); code != exitOK {
			t.Fatalf("pec restore %d: exit %d: %s", i, code, errOut.String())
		}
		s, err := proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		unsealed, _ := s.Unsealed(t.Context(), proof.MaxUnsealed)
		for _, id := range b.before {
			if _, err := s.Lookup(t.Context(), id); err != nil && !errors.Is(err, proof.ErrNotSealed) {
				t.Errorf("backup %d: the evidence %s of a token received before it: %v", i, id, err)
			}
		}
		s.Close()
		out.Reset()
		if code := run([]string{"proof", "audit", "--config", config}, nil, &out, &errOut); code != exitOK {
			t.Fatalf("backup %d: pec proof audit: exit %d: %s", i, code, errOut.String())
		}
		t.Logf("backup %d restored: %d records unsealed in it; %s", i, len(unsealed), strings.TrimSpace(out.String()))
	}
	// The last one, started: what it held unsealed is sealed.
	node, _ = startNodeOps(t, config)
	node.terminate(t)
	s, err := proof.OpenBolt(cfg.Proof.File, proof.BoltOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range backups[len(backups)-1].before {
		if _, err := s.Lookup(t.Context(), id); err != nil {
			t.Errorf("after the restored node's start: the evidence %s: %v", id, err)
		}
	}
}

// tarOf builds an archive of the given entries, for the reader's tests.
func tarOf(t testing.TB, entries ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e[0], Size: int64(len(e[1])), Mode: 0o600}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e[1])
	}
	tw.Close()
	return buf.Bytes()
}

// goodBackup is a small backup made by the writer.
func goodBackup(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw, err := newBackupWriter(&buf, time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range [][2]string{{nameSerials, "serials"}, {nameDirectory, `{"version":1}`}, {nameExchangesDir + "x1/doc-0", "payload"}} {
		if err := bw.addBytes(f[0], []byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bw.finish(&backupManifest{Scope: "node"}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReadBackup: a backup reads back whole; each way of damaging one is
// a *BackupError naming what is wrong, and nothing is left extracted of
// what a refused entry held beyond its own file.
func TestReadBackup(t *testing.T) {
	good := goodBackup(t)
	dir := t.TempDir()
	m, sum, err := readBackup(bytes.NewReader(good), dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 3 || len(sum) != 32 {
		t.Fatalf("manifest %+v", m)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "exchange", "payloads", "x1", "doc-0")); string(data) != "payload" {
		t.Errorf("extracted payload %q", data)
	}
	// The offsets of the data of the entries, to damage them.
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x20
		return c
	}
	at := -1 // the payload's data: at a block's start (its name holds "payload" too)
	for i := 0; i+7 <= len(good); i += 512 {
		if string(good[i:i+7]) == "payload" {
			at = i
		}
	}
	manifestAt := bytes.Index(good, []byte(`"scope"`))
	const format = backupFormat
	manifest := `{"version":1,"created":"2026-03-02T09:00:00Z","scope":"node","files":[]}` + "\n"
	sumOf := func(s string) string { return fmt.Sprintf("%x\n", sha256sum([]byte(s))) }
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "cut short: no manifest"},
		{"not a tar", []byte("hello, this is no tar archive at all, but a letter to a friend. " + strings.Repeat("x", 600)), "not a PEC backup"},
		{"another tar", tarOf(t, [2]string{"README", "hi"}), "not a PEC backup (it does not start with its FORMAT entry)"},
		{"another format", tarOf(t, [2]string{entryFormat, "pec-backup 9\n"}), "not a PEC backup of a format this pec reads"},
		{"a payload damaged", flip(good, at), "exchange/payloads/x1/doc-0: its SHA-256 is"},
		{"the manifest damaged", flip(good, manifestAt+1), "MANIFEST.json: its SHA-256 is"},
		{"cut in a file", good[:at+3], "exchange/payloads/x1/doc-0: cut short"},
		{"cut before the manifest", good[:at+512], "cut short"},
		{"no checksum", tarOf(t, [2]string{entryFormat, format}, [2]string{entryManifest, manifest}), "no checksum of the manifest"},
		{"a file not listed", tarOf(t, [2]string{entryFormat, format}, [2]string{nameSerials, "s"}, [2]string{entryManifest, manifest}, [2]string{entryManifestSum, sumOf(manifest)}), "tsa/serials: in the backup, not in the manifest"},
		{"a file listed, missing", tarOf(t, [2]string{entryFormat, format}, [2]string{entryManifest, strings.Replace(manifest, `"files":[]`, `"files":[{"name":"tsa/serials","size":1,"sha256":"00"}]`, 1)}, [2]string{entryManifestSum, sumOf(strings.Replace(manifest, `"files":[]`, `"files":[{"name":"tsa/serials","size":1,"sha256":"00"}]`, 1))}), "tsa/serials: in the manifest, missing from the backup"},
		{"a path outside", tarOf(t, [2]string{entryFormat, format}, [2]string{"../../etc/passwd", "x"}), "not the name of a file a backup holds"},
		{"an absolute path", tarOf(t, [2]string{entryFormat, format}, [2]string{"/etc/passwd", "x"}), "not the name of a file a backup holds"},
		{"a key", tarOf(t, [2]string{entryFormat, format}, [2]string{"hsm/tokens/x", "x"}), "not the name of a file a backup holds"},
		{"twice", tarOf(t, [2]string{entryFormat, format}, [2]string{nameSerials, "a"}, [2]string{nameSerials, "b"}), "tsa/serials: twice in the backup"},
		{"after the checksum", tarOf(t, [2]string{entryFormat, format}, [2]string{entryManifest, manifest}, [2]string{entryManifestSum, sumOf(manifest)}, [2]string{nameSerials, "s"}), "an entry after the manifest's checksum"},
		{"another version", tarOf(t, [2]string{entryFormat, format}, [2]string{entryManifest, strings.Replace(manifest, `"version":1`, `"version":2`, 1)}, [2]string{entryManifestSum, sumOf(strings.Replace(manifest, `"version":1`, `"version":2`, 1))}), "version 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := readBackup(bytes.NewReader(c.data), t.TempDir(), false)
			be, ok := errors.AsType[*BackupError](err)
			if !ok || !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v (%T), want a *BackupError with %q", err, err, c.want)
			}
			_ = be
		})
	}
}

// FuzzReadBackup: whatever the bytes, readBackup returns a manifest or a
// *BackupError, never panics, and writes only under its directory.
func FuzzReadBackup(f *testing.F) {
	f.Add(goodBackup(f))
	f.Add(tarOf(f, [2]string{entryFormat, backupFormat}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "x")
		os.Mkdir(dir, 0o700)
		m, _, err := readBackup(bytes.NewReader(data), dir, false)
		if err != nil {
			if _, ok := errors.AsType[*BackupError](err); !ok {
				t.Fatalf("not a *BackupError: %v (%T)", err, err)
			}
		} else if m == nil {
			t.Fatal("no manifest and no error")
		}
		entries, _ := os.ReadDir(parent)
		if len(entries) != 1 {
			t.Fatalf("written outside its directory: %v", entries)
		}
	})
}

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }
