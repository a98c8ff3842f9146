package proof_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"pec/proof"
)

// xmodPath is the path golang.org/x/mod/sumdb/tlog gives tile t: the Go
// checksum database's form, which names the height (tile/8/L/N); the
// c2sp.org/tlog-tiles form leaves it out.
func xmodPath(t proof.Tile) string {
	p := tlog.Tile{H: proof.TileHeight, L: t.Level, N: int64(t.N), W: t.Width}.Path()
	return "tile/" + strings.TrimPrefix(p, "tile/8/")
}

func TestTilePath(t *testing.T) {
	for _, c := range []struct {
		tile proof.Tile
		path string
	}{
		{proof.Tile{Level: 0, N: 0, Width: 256}, "tile/0/000"},
		{proof.Tile{Level: 0, N: 0, Width: 1}, "tile/0/000.p/1"},
		{proof.Tile{Level: 1, N: 999, Width: 256}, "tile/1/999"},
		{proof.Tile{Level: 2, N: 1000, Width: 17}, "tile/2/x001/000.p/17"},
		{proof.Tile{Level: 0, N: 1234067, Width: 256}, "tile/0/x001/x234/067"}, // the example of tlog-tiles
		{proof.Tile{Level: 63, N: math.MaxUint64, Width: 255}, "tile/63/x018/x446/x744/x073/x709/x551/615.p/255"},
	} {
		t.Run(c.path, func(t *testing.T) {
			if got := c.tile.Path(); got != c.path {
				t.Errorf("Path() = %q, want %q", got, c.path)
			}
			got, err := proof.ParseTilePath(c.path)
			if err != nil || got != c.tile {
				t.Errorf("ParseTilePath(%q) = %+v, %v; want %+v", c.path, got, err, c.tile)
			}
		})
	}
	// The same paths as the Go checksum database's tile code (height
	// left out), on random tiles.
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		tile := proof.Tile{Level: r.IntN(64), N: r.Uint64N(1 << uint(r.IntN(63))), Width: 1 + r.IntN(256)}
		if got, want := tile.Path(), xmodPath(tile); got != want {
			t.Fatalf("%+v: Path() = %q, x/mod's %q", tile, got, want)
		}
		if back, err := proof.ParseTilePath(tile.Path()); err != nil || back != tile {
			t.Fatalf("round trip of %+v: %+v, %v", tile, back, err)
		}
	}
}

func TestParseTilePathRefuses(t *testing.T) {
	for _, path := range []string{
		"", "tile", "tile/", "tile/0", "tile/0/", "/tile/0/000", "tiles/0/000", "tile/0/000/",
		"tile/00/000", "tile/01/000", "tile/64/000", "tile/-1/000", "tile/+1/000", "tile/a/000", "tile/8/0/000",
		"tile/0/00", "tile/0/0000", "tile/0/x000", "tile/0/001x", "tile/0/001/002", "tile/0/x000/001",
		"tile/0/x001/x002", "tile/0/xx01/002", "tile/0/x1/002", "tile/0/+01", "tile/0/-01", "tile/0/0 1",
		"tile/0/000.p", "tile/0/000.p/", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/01", "tile/0/000.p/1/",
		"tile/0/000.p/1.p/2", "tile/0/x001.p/001", "tile/0/000.q/1", "tile/0/000.p/+1",
		"tile/0/x018/x446/x744/x073/x709/x551/616",      // 2^64
		"tile/0/x001/x000/x000/x000/x000/x000/x000/000", // 8 groups
		"tile/data/000", "tile/0/../000", "tile/0/./000", "tile\\0\\000",
		"tile/0/" + strings.Repeat("x999/", 20) + "999",
	} {
		t.Run(path, func(t *testing.T) {
			tile, err := proof.ParseTilePath(path)
			if !errors.Is(err, proof.ErrMalformedTilePath) {
				t.Errorf("ParseTilePath(%q) = %+v, %v; want ErrMalformedTilePath", path, tile, err)
			}
		})
	}
	for _, path := range []string{"tile/entries", "tile/entries/000", "tile/entries/x001/234.p/5", "tile/entries/anything"} {
		if _, err := proof.ParseTilePath(path); !errors.Is(err, proof.ErrEntryBundle) {
			t.Errorf("ParseTilePath(%q): %v, want ErrEntryBundle", path, err)
		}
	}
}

func TestTreeTiles(t *testing.T) {
	// The examples of tlog-tiles.
	count := func(tiles []proof.Tile) map[string]int {
		m := map[string]int{}
		for _, x := range tiles {
			kind := "full"
			if !x.Full() {
				kind = fmt.Sprintf("partial %d", x.Width)
			}
			m[fmt.Sprintf("level %d %s", x.Level, kind)]++
		}
		return m
	}
	got := count(proof.TreeTiles(70000))
	want := map[string]int{"level 0 full": 273, "level 0 partial 112": 1, "level 1 full": 1, "level 1 partial 17": 1, "level 2 partial 1": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tiles of 70,000: %v, want %v", got, want)
	}
	got = count(proof.TreeTiles(256))
	want = map[string]int{"level 0 full": 1, "level 1 partial 1": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tiles of 256: %v, want %v", got, want)
	}
	if tiles := proof.TreeTiles(0); len(tiles) != 0 {
		t.Errorf("tiles of the empty tree: %v", tiles)
	}
	// The tiles of a tree are exactly those golang.org/x/mod/sumdb/tlog
	// says a tree of that size needs.
	for _, size := range []uint64{1, 255, 256, 257, 511, 65535, 65536, 65537, 70000} {
		var want []string
		for _, x := range tlog.NewTiles(proof.TileHeight, 0, int64(size)) {
			want = append(want, "tile/"+strings.TrimPrefix(x.Path(), "tile/8/"))
		}
		var got []string
		for _, x := range proof.TreeTiles(size) {
			got = append(got, x.Path())
		}
		if !sameSet(got, want) {
			t.Errorf("size %d: tiles %v, x/mod %v", size, got, want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

// fill appends n records from 64 writers and waits until a sealed head
// covers them all.
func fill(t testing.TB, l *proof.Log, from, n int) {
	t.Helper()
	ctx := t.Context()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				if _, err := l.Append(ctx, sampleRecord(i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := from; i < from+n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	want := uint64(from + n)
	deadline := time.Now().Add(10 * time.Second)
	for h := l.Latest(); h == nil || h.Size < want; h = l.Latest() {
		if time.Now().After(deadline) {
			t.Fatalf("no sealed head of size %d within 10s (latest %v)", want, h)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// storeTiles reads tiles from a store for golang.org/x/mod/sumdb/tlog,
// an implementation of the tiled log that we did not write.
type storeTiles struct {
	ctx   context.Context
	s     proof.Store
	size  uint64
	reads int
}

func (r *storeTiles) Height() int { return proof.TileHeight }

func (r *storeTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, x := range tiles {
		data, err := proof.ReadTile(r.ctx, r.s, proof.Tile{Level: x.L, N: uint64(x.N), Width: x.W}, r.size)
		if err != nil {
			return nil, err
		}
		out[i] = data
		r.reads++
	}
	return out, nil
}

func (r *storeTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// TestReadTileIndependentClient: the tiles of a real log, read by the Go
// checksum database's client code, give the root of every sealed
// checkpoint, the inclusion of records and the consistency of heads.
func TestReadTileIndependentClient(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, proof.Config{BatchSize: 100})
	defer l.Close()
	ctx := t.Context()
	fill(t, l, 0, 300)
	fill(t, l, 300, 300) // a second tile at level 0, a partial tile at level 1
	latest := l.Latest()

	var heads []*proof.Head
	if err := s.Heads(ctx, func(h *proof.Head) error { heads = append(heads, h); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(heads) < 3 {
		t.Fatalf("%d heads: want batches", len(heads))
	}
	tr := &storeTiles{ctx: ctx, s: s, size: latest.Size}
	tree := tlog.Tree{N: int64(latest.Size), Hash: tlog.Hash(latest.Root)}
	hr := tlog.TileHashReader(tree, tr)
	root, err := tlog.TreeHash(tree.N, hr)
	if err != nil || !bytes.Equal(root[:], latest.Root) {
		t.Fatalf("root from the tiles: %x, %v; want %x", root, err, latest.Root)
	}
	for _, h := range heads {
		// Every earlier head's root, from the tiles of the latest tree.
		root, err := tlog.TreeHash(int64(h.Size), hr)
		if err != nil || !bytes.Equal(root[:], h.Root) {
			t.Fatalf("root of head %d from the tiles: %x, %v; want %x", h.Size, root, err, h.Root)
		}
		p, err := tlog.ProveTree(tree.N, int64(h.Size), hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, int64(h.Size), tlog.Hash(h.Root)); err != nil {
			t.Errorf("consistency %d→%d from the tiles: %v", h.Size, tree.N, err)
		}
		// And the tiles of that smaller tree itself: narrower partial
		// tiles of the same content.
		old := &storeTiles{ctx: ctx, s: s, size: latest.Size}
		if root, err := tlog.TreeHash(int64(h.Size), tlog.TileHashReader(tlog.Tree{N: int64(h.Size), Hash: tlog.Hash(h.Root)}, old)); err != nil || !bytes.Equal(root[:], h.Root) {
			t.Errorf("head %d from its own tiles: %x, %v", h.Size, root, err)
		}
	}
	for _, idx := range []int64{0, 1, 255, 256, 299, 512, int64(latest.Size) - 1} {
		rec, err := s.Record(ctx, uint64(idx))
		if err != nil {
			t.Fatal(err)
		}
		p, err := tlog.ProveRecord(tree.N, idx, hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, tree.N, tree.Hash, idx, tlog.RecordHash(rec.Data)); err != nil {
			t.Errorf("inclusion of record %d from the tiles: %v", idx, err)
		}
	}
	if tr.reads == 0 {
		t.Fatal("no tile read")
	}
}

// TestReadTileBounds: only what the tree of the given size holds.
func TestReadTileBounds(t *testing.T) {
	e := newEnv(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "proof.db"))
	defer s.Close()
	l := e.openLog(t, s, proof.Config{})
	defer l.Close()
	ctx := t.Context()
	fill(t, l, 0, 300)
	size := l.Latest().Size // 300: a full level-0 tile, a partial of 44, a partial level-1 tile of 1

	for _, c := range []struct {
		tile proof.Tile
		size uint64
		ok   bool
	}{
		{proof.Tile{Level: 0, N: 0, Width: 256}, size, true},
		{proof.Tile{Level: 0, N: 1, Width: 44}, size, true},
		{proof.Tile{Level: 0, N: 1, Width: 1}, size, true},   // an earlier tree's partial tile
		{proof.Tile{Level: 0, N: 0, Width: 100}, size, true}, // a partial tile that filled since
		{proof.Tile{Level: 1, N: 0, Width: 1}, size, true},
		{proof.Tile{Level: 0, N: 1, Width: 45}, size, false}, // wider than the tree
		{proof.Tile{Level: 0, N: 1, Width: 256}, size, false},
		{proof.Tile{Level: 0, N: 2, Width: 1}, size, false},
		{proof.Tile{Level: 1, N: 0, Width: 2}, size, false},
		{proof.Tile{Level: 2, N: 0, Width: 1}, size, false},
		{proof.Tile{Level: 8, N: 0, Width: 1}, size, false},
		{proof.Tile{Level: 63, N: math.MaxUint64, Width: 255}, size, false},
		{proof.Tile{Level: 0, N: math.MaxUint64, Width: 256}, math.MaxUint64, false}, // no overflow
		{proof.Tile{Level: 0, N: 1, Width: 44}, 299, false},                          // not in a smaller tree
		{proof.Tile{Level: 0, N: 0, Width: 1}, 0, false},
	} {
		t.Run(c.tile.Path()+fmt.Sprintf("@%d", c.size), func(t *testing.T) {
			data, err := proof.ReadTile(ctx, s, c.tile, c.size)
			if !c.ok {
				if !errors.Is(err, proof.ErrNotFound) {
					t.Errorf("ReadTile: %d bytes, %v; want ErrNotFound", len(data), err)
				}
				return
			}
			if err != nil || len(data) != 32*c.tile.Width {
				t.Fatalf("ReadTile: %d bytes, %v", len(data), err)
			}
			// Each hash is the stored leaf or subtree hash.
			if c.tile.Level == 0 {
				for i := range c.tile.Width {
					rec, err := s.Record(ctx, c.tile.N*256+uint64(i))
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(data[32*i:32*i+32], proof.LeafHash(rec.Data)) {
						t.Fatalf("hash %d is not the leaf hash of record %d", i, c.tile.N*256+uint64(i))
					}
				}
			}
		})
	}
	// A narrower partial tile is a prefix of a wider one.
	wide, _ := proof.ReadTile(ctx, s, proof.Tile{Level: 0, N: 1, Width: 44}, size)
	narrow, _ := proof.ReadTile(ctx, s, proof.Tile{Level: 0, N: 1, Width: 10}, size)
	if !bytes.HasPrefix(wide, narrow) || len(narrow) != 320 {
		t.Error("the partial tile of width 10 is not a prefix of that of width 44")
	}
	if _, err := proof.ReadTile(ctx, s, proof.Tile{Level: 0, Width: 0}, size); !errors.Is(err, proof.ErrMalformedTilePath) {
		t.Errorf("a tile of width 0: %v", err)
	}
	if _, err := proof.ReadTile(ctx, s, proof.Tile{Level: 64, Width: 1}, size); !errors.Is(err, proof.ErrMalformedTilePath) {
		t.Errorf("a tile of level 64: %v", err)
	}
}

// FuzzParseTilePath: no panic; what is accepted is canonical and round
// trips; and the parser agrees with golang.org/x/mod/sumdb/tlog's (which
// names the height) on every path both can represent.
func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/0/x001/x234/067.p/5", "tile/entries/000", "tile/63/999.p/255", "tile/1/x000/001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		tile, err := proof.ParseTilePath(path)
		if err != nil {
			if !errors.Is(err, proof.ErrMalformedTilePath) && !errors.Is(err, proof.ErrEntryBundle) {
				t.Fatalf("ParseTilePath(%q): untyped error %v", path, err)
			}
		} else {
			if tile.Path() != path {
				t.Fatalf("ParseTilePath(%q) = %+v, whose path is %q", path, tile, tile.Path())
			}
			if tile.Level < 0 || tile.Level > 63 || tile.Width < 1 || tile.Width > 256 {
				t.Fatalf("ParseTilePath(%q) = %+v: out of range", path, tile)
			}
		}
		rest, ok := strings.CutPrefix(path, "tile/")
		if !ok || strings.HasPrefix(rest, "data/") || strings.HasPrefix(rest, "entries") {
			return
		}
		xt, xerr := tlog.ParseTilePath("tile/8/" + rest)
		switch {
		case err == nil && tile.N <= math.MaxInt64:
			if xerr != nil || xt.L != tile.Level || uint64(xt.N) != tile.N || xt.W != tile.Width {
				t.Fatalf("%q: ours %+v, x/mod's %+v, %v", path, tile, xt, xerr)
			}
		case err != nil && xerr == nil && xt.L <= 63:
			t.Fatalf("%q: refused (%v), x/mod reads %+v", path, err, xt)
		}
	})
}
