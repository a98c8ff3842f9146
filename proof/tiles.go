package proof

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/compact"
)

// Hash tiles of c2sp.org/tlog-tiles ("Merkle Tree" section): the log's
// tree published as static resources, so that anyone can compute
// inclusion and consistency proofs, and check a checkpoint's root, without
// a proof API. Only hash tiles are published. Entry bundles
// (tile/entries/...) are not: the records name who exchanged with whom.
//
// A tile at level L, index N holds the hashes of the perfect subtrees of
// height 8L at indexes 256N to 256N+W-1, W at most 256; the store keeps
// every perfect subtree's hash, so a tile is W node reads.

// TileHeight is the height of the tiles of c2sp.org/tlog-tiles: a full
// tile is 2^8 = 256 hashes, 8,192 bytes.
const TileHeight = 8

// TileWidth is the number of hashes of a full tile.
const TileWidth = 1 << TileHeight

// maxTileLevel is the highest level of tlog-tiles paths; tiles above
// level 7 would hash subtrees of 2^64 leaves and are always empty here.
const maxTileLevel = 63

// maxTilePath bounds a tile path: "tile/63/" and seven index groups of
// "x123/" and ".p/255" are 48 bytes.
const maxTilePath = 64

// Why a tile path is refused. Test with errors.Is.
var (
	// ErrMalformedTilePath: not a hash tile path of c2sp.org/tlog-tiles
	// in its one canonical form.
	ErrMalformedTilePath = errors.New("proof: not a hash tile path of c2sp.org/tlog-tiles")
	// ErrEntryBundle: a path of an entry bundle (tile/entries/...), which
	// this log does not publish.
	ErrEntryBundle = errors.New("proof: entry bundles are not published: the records name who exchanged with whom")
)

// Tile names a hash tile.
type Tile struct {
	Level int    // 0-63
	N     uint64 // the tile's index within its level
	Width int    // 1-256 hashes; TileWidth for a full tile
}

// Full reports whether t is a full tile.
func (t Tile) Full() bool { return t.Width == TileWidth }

// Path is t's path under a log's prefix, as tlog-tiles names it:
// tile/<L>/<N>[.p/<W>], N in 3-digit groups of which all but the last
// begin with "x" (1234067: x001/x234/067).
func (t Tile) Path() string {
	var groups []string
	n := t.N
	for {
		groups = append(groups, fmt.Sprintf("%03d", n%1000))
		n /= 1000
		if n == 0 {
			break
		}
	}
	var b strings.Builder
	b.WriteString("tile/")
	b.WriteString(strconv.Itoa(t.Level))
	for i := len(groups) - 1; i >= 0; i-- {
		b.WriteByte('/')
		if i > 0 {
			b.WriteByte('x')
		}
		b.WriteString(groups[i])
	}
	if !t.Full() {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.Width))
	}
	return b.String()
}

// ParseTilePath reads a hash tile path (without the log's prefix or a
// leading slash): tile/<L>/<N>[.p/<W>]. It accepts only the canonical
// form (no leading zeros, no empty group, 3-digit groups) and indexes that
// fit 64 bits; an entry bundle's path is ErrEntryBundle, anything else
// ErrMalformedTilePath.
func ParseTilePath(path string) (Tile, error) {
	bad := func(why string) (Tile, error) {
		return Tile{}, fmt.Errorf("%w: %s", ErrMalformedTilePath, why)
	}
	if len(path) > maxTilePath {
		return bad("too long")
	}
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return bad(`not under "tile/"`)
	}
	if rest == "entries" || strings.HasPrefix(rest, "entries/") {
		return Tile{}, ErrEntryBundle
	}
	f := strings.Split(rest, "/")
	if len(f) < 2 {
		return bad("no tile index")
	}
	level, ok := canonicalDecimal(f[0], maxTileLevel)
	if !ok {
		return bad("the level is not a decimal number within 0-63")
	}
	t := Tile{Level: int(level), Width: TileWidth}
	f = f[1:]
	if len(f) >= 2 && strings.HasSuffix(f[len(f)-2], ".p") {
		w, ok := canonicalDecimal(f[len(f)-1], TileWidth-1)
		if !ok || w == 0 {
			return bad("the width of a partial tile is not a decimal number within 1-255")
		}
		t.Width = int(w)
		f[len(f)-2] = strings.TrimSuffix(f[len(f)-2], ".p")
		f = f[:len(f)-1]
	}
	if len(f) > 7 {
		return bad("the index has more than 7 groups")
	}
	for i, g := range f {
		if i < len(f)-1 {
			var ok bool
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return bad(`an index group but the last does not begin with "x"`)
			}
		}
		if len(g) != 3 || g[0] < '0' || g[0] > '9' || g[1] < '0' || g[1] > '9' || g[2] < '0' || g[2] > '9' {
			return bad("an index group is not 3 digits")
		}
		d := uint64(g[0]-'0')*100 + uint64(g[1]-'0')*10 + uint64(g[2]-'0')
		if t.N > (math.MaxUint64-d)/1000 {
			return bad("the index does not fit 64 bits")
		}
		t.N = t.N*1000 + d
	}
	if t.Path() != path {
		return bad("not in canonical form")
	}
	return t, nil
}

// canonicalDecimal reads s as a decimal number within 0-limit with no
// sign and no leading zero.
func canonicalDecimal(s string, limit uint64) (uint64, bool) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return n, err == nil && n <= limit
}

// TreeTiles are the tiles that describe the tree of the given size: its
// full tiles from index start on at each level, then its partial tiles.
// For a size of 70,000: 273 full and one partial (width 112) level-0
// tiles, one full and one partial (17) level-1 tile, one partial (1)
// level-2 tile, as in tlog-tiles. It is meant for small trees and tests.
func TreeTiles(size uint64) []Tile {
	var out []Tile
	for level := 0; level <= 7; level++ {
		hashes := size >> (TileHeight * level)
		if hashes == 0 {
			break
		}
		for n := range hashes / TileWidth {
			out = append(out, Tile{Level: level, N: n, Width: TileWidth})
		}
		if w := hashes % TileWidth; w > 0 {
			out = append(out, Tile{Level: level, N: hashes / TileWidth, Width: int(w)})
		}
	}
	return out
}

// In reports whether the tree of the given size holds all of t's hashes:
// t's hashes are perfect subtrees of that tree.
func (t Tile) In(size uint64) bool {
	if t.Level < 0 || t.Level >= 64/TileHeight || t.Width < 1 || t.Width > TileWidth {
		return false
	}
	avail := size >> (TileHeight * t.Level) // perfect subtrees of height 8L
	return t.N <= avail/TileWidth && uint64(t.Width) <= avail-t.N*TileWidth
}

// ReadTile is the content of tile t — its hashes, concatenated — in the
// tree of the given size, read from the store. A tile whose hashes are
// not all perfect subtrees of that tree is ErrNotFound: a full tile the
// tree has not filled, a partial tile wider than the tree's, any tile of
// level 8 or above.
//
// A partial tile narrower than the one the tree's own checkpoint implies
// is served too: its hashes are those of the tree of an earlier
// checkpoint, which c2sp.org/tlog-tiles requires a log to keep serving
// (a monitor that verified that checkpoint reads them) until the full
// tile exists, and may keep serving after. Every tile's content is
// immutable: perfect subtrees never change in an append-only log.
func ReadTile(ctx context.Context, s Store, t Tile, size uint64) ([]byte, error) {
	if t.Level < 0 || t.Level > maxTileLevel || t.Width < 1 || t.Width > TileWidth {
		return nil, fmt.Errorf("%w: tile %+v", ErrMalformedTilePath, t)
	}
	if !t.In(size) {
		return nil, fmt.Errorf("%w: %s is not in the tree of size %d", ErrNotFound, t.Path(), size)
	}
	start := t.N * TileWidth
	ids := make([]compact.NodeID, t.Width)
	for i := range ids {
		ids[i] = compact.NewNodeID(uint(TileHeight*t.Level), start+uint64(i))
	}
	hashes, err := s.Nodes(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("proof: tile %s: %w", t.Path(), err)
	}
	out := make([]byte, 0, len(hashes)*sha256.Size)
	for i, h := range hashes {
		if len(h) != sha256.Size {
			return nil, fmt.Errorf("proof: tile %s: stored node %d is %d bytes, not %d", t.Path(), ids[i].Index, len(h), sha256.Size)
		}
		out = append(out, h...)
	}
	return out, nil
}
