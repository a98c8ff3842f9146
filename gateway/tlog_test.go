package gateway_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"pec/evidence"
	"pec/gateway"
	"pec/gateway/api"
	"pec/proof"
	"pec/tsa"
)

// tlogNode is a node's evidence log over a bbolt file, published by the
// tsa listener's handler.
type tlogNode struct {
	p      *pki
	auth   *tsa.Authority
	signer *proof.NoteSigner
	path   string
	store  *proof.BoltStore
	log    *proof.Log
	srv    *httptest.Server
}

func newTlogNode(t *testing.T) *tlogNode {
	t.Helper()
	p := newPKI(t)
	n := &tlogNode{p: p, auth: newAuthority(t, p, tsa.Options{}), path: filepath.Join(t.TempDir(), "proof.db")}
	var err error
	if n.signer, err = proof.NewNoteSigner("pec.test/proof", mustKey(t)); err != nil {
		t.Fatal(err)
	}
	n.open(t)
	t.Cleanup(n.close)
	return n
}

func (n *tlogNode) open(t *testing.T) {
	t.Helper()
	var err error
	if n.store, err = proof.OpenBolt(n.path, proof.BoltOptions{}); err != nil {
		t.Fatal(err)
	}
	if n.log, err = proof.Open(t.Context(), n.store, n.signer, proof.AuthorityTimestamper{Authority: n.auth}, proof.Config{BatchSize: 50}, proof.Options{}); err != nil {
		t.Fatal(err)
	}
	n.srv = httptest.NewServer(gateway.NewTSAHandler(n.auth, 1024, gateway.Options{Proofs: &gateway.ProofReader{Log: n.log}}))
}

func (n *tlogNode) close() {
	if n.srv == nil {
		return
	}
	n.srv.Close()
	n.log.Close()
	n.store.Close()
	n.srv = nil
}

// appendRecords appends count records tagged tag from 16 writers and
// waits until a sealed head covers them.
func (n *tlogNode) appendRecords(t *testing.T, tag string, count int) {
	t.Helper()
	before := uint64(0)
	if h := n.log.Latest(); h != nil {
		before = h.Size
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < count; i += 16 {
				_, err := n.log.Append(t.Context(), &evidence.Record{
					Type:    evidence.SubmissionAccepted,
					Subject: fmt.Sprintf("%s-%d", tag, i),
					Digests: []evidence.Digest{{Name: "dossier", Algorithm: "sha256", Value: make([]byte, 32)}},
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	deadline := time.Now().Add(10 * time.Second)
	for h := n.log.Latest(); h == nil || h.Size < before+uint64(count); h = n.log.Latest() {
		if time.Now().After(deadline) {
			t.Fatalf("no head of size %d sealed within 10s", before+uint64(count))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// wantProblem checks an RFC 9457 answer of the given status.
func wantProblem(t *testing.T, url string, status int) {
	t.Helper()
	resp, body := get(t, url)
	p := wantTypedProblem(t, resp.StatusCode, resp.Header, body, "")
	if resp.StatusCode != status || p.Detail == "" {
		t.Errorf("GET %s: %s %q %s; want a %d problem", url, resp.Status, resp.Header.Get("Content-Type"), body, status)
	}
}

// httpTiles reads tiles over HTTP for golang.org/x/mod/sumdb/tlog's
// client, which authenticates every tile against the tree's root.
type httpTiles struct {
	t    *testing.T
	base string
}

func (h httpTiles) Height() int { return proof.TileHeight }

func (h httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, x := range tiles {
		path := "tile/" + strings.TrimPrefix(x.Path(), "tile/8/")
		resp, body := get(h.t, h.base+"/"+path)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /%s: %s", path, resp.Status)
		}
		if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "application/octet-stream" || !strings.Contains(cc, "immutable") {
			h.t.Errorf("GET /%s: Content-Type %q, Cache-Control %q", path, ct, cc)
		}
		out[i] = body
	}
	return out, nil
}

func (httpTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func fetchConsistency(t *testing.T, base string, oldSize, newSize uint64) [][]byte {
	t.Helper()
	resp, body := get(t, fmt.Sprintf("%s/proof/consistency?old=%d&new=%d", base, oldSize, newSize))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consistency %d→%d: %s %s", oldSize, newSize, resp.Status, body)
	}
	var cp api.ConsistencyProof
	if err := json.Unmarshal(body, &cp); err != nil || cp.Old != oldSize || cp.New != newSize {
		t.Fatalf("consistency %d→%d: %s (%v)", oldSize, newSize, body, err)
	}
	out := make([][]byte, len(cp.Proof))
	for i, s := range cp.Proof {
		var err error
		if out[i], err = base64.StdEncoding.DecodeString(s); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestTlogPublished: the newest checkpoint, the checkpoint and token of
// every sealed size, the tiles (read by an independent client) and
// consistency proofs, all without a client certificate.
func TestTlogPublished(t *testing.T) {
	n := newTlogNode(t)
	base := n.srv.URL
	wantProblem(t, base+"/checkpoint", http.StatusNotFound) // empty log
	wantProblem(t, base+"/tile/0/000.p/1", http.StatusNotFound)

	n.appendRecords(t, "a", 300)
	n.appendRecords(t, "b", 40)
	latest := n.log.Latest()

	resp, body := get(t, base+"/checkpoint")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, latest.Checkpoint) {
		t.Fatalf("GET /checkpoint: %s %q", resp.Status, body)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "text/plain; charset=utf-8" || cc != "no-cache" {
		t.Errorf("GET /checkpoint: Content-Type %q, Cache-Control %q", ct, cc)
	}
	cp, err := proof.OpenCheckpoint(n.signer.Verifier(), "", body)
	if err != nil || cp.Size != latest.Size {
		t.Fatalf("the published checkpoint: %+v, %v", cp, err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(n.p.ca.Cert)
	var heads []*proof.Head
	if err := n.store.Heads(t.Context(), func(h *proof.Head) error { heads = append(heads, h); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(heads) < 3 {
		t.Fatalf("%d heads; want several batches", len(heads))
	}
	for _, h := range heads {
		_, note := get(t, fmt.Sprintf("%s/checkpoints/%d", base, h.Size))
		resp, token := get(t, fmt.Sprintf("%s/checkpoints/%d.tst", base, h.Size))
		if !bytes.Equal(note, h.Checkpoint) || !bytes.Equal(token, h.Token) || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
			t.Fatalf("checkpoint %d: not the stored note and token", h.Size)
		}
		digest := sha256.Sum256(note)
		if _, err := tsa.Verify(token, digest[:], crypto.SHA256, tsa.VerifyOptions{Roots: roots}); err != nil {
			t.Errorf("the token of checkpoint %d: %v", h.Size, err)
		}
		proofHashes := fetchConsistency(t, base, h.Size, latest.Size)
		if err := proof.VerifyConsistency(h.Size, latest.Size, proofHashes, h.Root, latest.Root); err != nil {
			t.Errorf("consistency %d→%d: %v", h.Size, latest.Size, err)
		}
	}
	if p := fetchConsistency(t, base, 0, latest.Size); len(p) != 0 {
		t.Errorf("consistency from the empty tree: %d hashes", len(p))
	}
	if p := fetchConsistency(t, base, 7, 300); proof.VerifyConsistency(7, 300, p, mustRoot(t, n, 7), mustRoot(t, n, 300)) != nil {
		t.Error("consistency between two sizes that have no checkpoint of their own does not verify")
	}

	// The tiles, through the Go checksum database's client: the roots of
	// the newest and of every earlier checkpoint, consistency proofs.
	tree := tlog.Tree{N: int64(latest.Size), Hash: tlog.Hash(latest.Root)}
	hr := tlog.TileHashReader(tree, httpTiles{t, base})
	for _, h := range heads {
		root, err := tlog.TreeHash(int64(h.Size), hr)
		if err != nil || !bytes.Equal(root[:], h.Root) {
			t.Fatalf("root %d from the published tiles: %x, %v; want %x", h.Size, root, err, h.Root)
		}
		tp, err := tlog.ProveTree(tree.N, int64(h.Size), hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(tp, tree.N, tree.Hash, int64(h.Size), tlog.Hash(h.Root)); err != nil {
			t.Errorf("consistency %d→%d from the published tiles: %v", h.Size, tree.N, err)
		}
	}

	// Refusals: RFC 9457 problems.
	noHead := uint64(1) // a size with no checkpoint of its own
	for _, h := range heads {
		if h.Size == noHead {
			noHead++
		}
	}
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/tile/entries/000", http.StatusNotFound},
		{"/tile/entries/000.p/5", http.StatusNotFound},
		{"/tile/0/001", http.StatusNotFound},      // not full yet
		{"/tile/0/001.p/85", http.StatusNotFound}, // wider than the tree (340)
		{"/tile/0/002.p/1", http.StatusNotFound},  // beyond the tree
		{"/tile/2/000.p/1", http.StatusNotFound},  // a level the tree does not reach
		{"/tile/0/0", http.StatusBadRequest},      // not 3 digits
		{"/tile/00/000", http.StatusBadRequest},   // leading zero
		{"/tile/0/000.p/256", http.StatusBadRequest},
		{"/tile/8/0/000", http.StatusBadRequest}, // the Go checksum database's form
		{"/tile/", http.StatusBadRequest},
		{fmt.Sprintf("/checkpoints/%d", noHead), http.StatusNotFound},
		{fmt.Sprintf("/checkpoints/%d", latest.Size+1), http.StatusNotFound},
		{"/checkpoints/007", http.StatusBadRequest},
		{"/checkpoints/x.tst", http.StatusBadRequest},
		{"/checkpoints/-1", http.StatusBadRequest},
		{"/checkpoints/18446744073709551616", http.StatusBadRequest},
		{"/proof/consistency", http.StatusBadRequest},
		{"/proof/consistency?old=1", http.StatusBadRequest},
		{"/proof/consistency?old=1&new=2&old=1", http.StatusBadRequest},
		{"/proof/consistency?old=1&new=2&x=3", http.StatusBadRequest},
		{"/proof/consistency?old=01&new=2", http.StatusBadRequest},
		{"/proof/consistency?old=3&new=2", http.StatusBadRequest},
		{"/proof/consistency?old=a&new=2", http.StatusBadRequest},
		{fmt.Sprintf("/proof/consistency?old=1&new=%d", latest.Size+1), http.StatusNotFound},
	} {
		wantProblem(t, base+c.path, c.status)
	}
	for _, path := range []string{"/tile/0/000.p/44", "/tile/0/001.p/84", "/tile/1/000.p/1", "/tile/0/001.p/1"} {
		if resp, body := get(t, base+path); resp.StatusCode != http.StatusOK || len(body)%32 != 0 {
			t.Errorf("GET %s: %s, %d bytes", path, resp.Status, len(body))
		}
	}
	// Nothing but GET.
	resp, err = http.Post(base+"/checkpoint", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /checkpoint: %s", resp.Status)
	}
}

// mustRoot is the root of the tree of size, from the store's nodes.
func mustRoot(t *testing.T, n *tlogNode, size uint64) []byte {
	t.Helper()
	latest := n.log.Latest()
	hr := tlog.TileHashReader(tlog.Tree{N: int64(latest.Size), Hash: tlog.Hash(latest.Root)}, httpTiles{t, n.srv.URL})
	root, err := tlog.TreeHash(int64(size), hr)
	if err != nil {
		t.Fatal(err)
	}
	return root[:]
}

// TestTlogRolledBack: a node whose store was put back to an older copy and
// extended with other records publishes a tree that does not extend what
// it published before — the consistency proof it serves does not verify
// against the roots a monitor kept, and the tiles do not give the old root.
func TestTlogRolledBack(t *testing.T) {
	n := newTlogNode(t)
	n.appendRecords(t, "first", 100)
	n.close()
	// The whole store: the bbolt file and its write-ahead log (which
	// alone would bring the genuine records back, in their order).
	saved := snapshotStore(t, n.path)
	n.open(t)
	n.appendRecords(t, "genuine", 100)
	seen := n.log.Latest() // what a monitor saw
	n.close()

	restoreStore(t, n.path, saved)
	n.open(t)
	if h := n.log.Latest(); h.Size != 100 {
		t.Fatalf("the restored store is of size %d", h.Size)
	}
	n.appendRecords(t, "rewritten", 150)
	now := n.log.Latest()
	if now.Size <= seen.Size {
		t.Fatalf("sizes %d then %d", seen.Size, now.Size)
	}
	p := fetchConsistency(t, n.srv.URL, seen.Size, now.Size)
	if err := proof.VerifyConsistency(seen.Size, now.Size, p, seen.Root, now.Root); err == nil {
		t.Fatal("the rewritten log's consistency proof verifies against the root seen before")
	}
	// The tiles tell the same: they give another root for the size seen.
	if root := mustRoot(t, n, seen.Size); bytes.Equal(root, seen.Root) {
		t.Fatal("the rewritten log's tiles give the root seen before")
	}
	// Up to the restored copy, the history is the same.
	h100, err := n.store.HeadAt(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	p = fetchConsistency(t, n.srv.URL, 100, now.Size)
	if err := proof.VerifyConsistency(100, now.Size, p, h100.Root, now.Root); err != nil {
		t.Errorf("consistency from the common prefix: %v", err)
	}
}

// snapshotStore copies the embedded store at path (file and write-ahead
// log) aside; restoreStore puts the copy back.
func snapshotStore(t *testing.T, path string) string {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, path, filepath.Join(dir, "store"))
	copyTree(t, proof.WALDir(path), filepath.Join(dir, "wal"))
	return dir
}

func restoreStore(t *testing.T, path, saved string) {
	t.Helper()
	copyTree(t, filepath.Join(saved, "store"), path)
	copyTree(t, filepath.Join(saved, "wal"), proof.WALDir(path))
}

// copyTree copies the file or the directory of files src to dst,
// replacing it.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if fi.IsDir() {
		err = os.CopyFS(dst, os.DirFS(src))
	} else {
		var data []byte
		if data, err = os.ReadFile(src); err == nil {
			err = os.WriteFile(dst, data, 0o600)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}
