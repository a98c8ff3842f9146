// Package yamlpath names the places of a YAML document the way an operator
// reads them: by their path ("tsa.clock.ntp_servers[1]") and their line.
//
// [Locate] finds the line of the node a path names, so that a fault found
// after decoding ("tsa.accuracy: must be positive") can point at the line
// that holds it. [Check] walks a document beside the Go type it decodes
// into (with the field names and flags of go.yaml.in/yaml/v3) and reports,
// each with its path and line, every unknown field (with the nearest known
// name, by edit distance), every value of the wrong type and every key set
// twice — all of them, where the YAML decoder names Go types and gives up
// on a whole mapping for one key set twice. [Drop] then removes the entries
// that hold faults, so that the rest of the document still decodes and can
// be checked by its meaning.
//
// Aliases and merge keys ("<<", https://yaml.org/type/merge.html) are
// followed as the decoder follows them; an alias that contains itself is
// reported, not followed.
package yamlpath

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Step is one step of a path: a mapping key, or an index in a sequence.
type Step struct {
	Key   string
	Index int // >= 0: a sequence index; -1: a mapping key
}

// ErrSyntax is a path that Parse cannot read.
var ErrSyntax = errors.New("yamlpath: not a path")

// MaxPath bounds the length of a path that Parse reads.
const MaxPath = 1024

// Parse reads a path: keys separated by dots, each optionally followed by
// sequence indexes in brackets ("signing.profiles[0].cert_file",
// "a[1][2]"). A key is any text without '.', '[', ']', ':' or a space.
func Parse(path string) ([]Step, error) {
	if path == "" || len(path) > MaxPath {
		return nil, fmt.Errorf("%w: %q", ErrSyntax, path)
	}
	var steps []Step
	for seg := range strings.SplitSeq(path, ".") {
		key, rest, _ := strings.Cut(seg, "[")
		if key == "" || strings.ContainsAny(key, "]: \t\n") {
			return nil, fmt.Errorf("%w: %q", ErrSyntax, path)
		}
		steps = append(steps, Step{Key: key, Index: -1})
		if len(seg) == len(key) {
			continue
		}
		rest = "[" + rest
		for rest != "" {
			end := strings.IndexByte(rest, ']')
			if rest[0] != '[' || end < 2 {
				return nil, fmt.Errorf("%w: %q", ErrSyntax, path)
			}
			digits := rest[1:end]
			i, err := strconv.Atoi(digits)
			if err != nil || i < 0 || digits != strconv.Itoa(i) {
				return nil, fmt.Errorf("%w: %q", ErrSyntax, path)
			}
			steps = append(steps, Step{Index: i})
			rest = rest[end+1:]
		}
	}
	return steps, nil
}

// Format writes steps as Parse reads them.
func Format(steps []Step) string {
	var b strings.Builder
	for i, s := range steps {
		switch {
		case s.Index >= 0:
			fmt.Fprintf(&b, "[%d]", s.Index)
		case i > 0:
			b.WriteString("." + s.Key)
		default:
			b.WriteString(s.Key)
		}
	}
	return b.String()
}

// maxDepth bounds the aliases and merges followed while locating a node.
const maxDepth = 64

// Locate returns the line and column of the node that path names in doc
// (a document node or its root mapping): for a mapping key, where the key
// is written; for a sequence item, where the item starts. When the path
// does not exist in full (a required field left out), it returns the place
// of the deepest step that does, with exact false: the section to add the
// field to. line is 0 when not even the first step exists, or path is not
// a path.
func Locate(doc *yaml.Node, path string) (line, column int, exact bool) {
	steps, err := Parse(path)
	if err != nil || doc == nil {
		return 0, 0, false
	}
	n := resolve(doc, 0)
	for i, s := range steps {
		var at, next *yaml.Node
		if s.Index >= 0 {
			if n == nil || n.Kind != yaml.SequenceNode || s.Index >= len(n.Content) {
				return line, column, false
			}
			at = n.Content[s.Index]
			next = resolve(at, 0)
		} else {
			k, v := lookup(n, s.Key, 0)
			if k == nil {
				return line, column, false
			}
			at, next = k, resolve(v, 0)
		}
		line, column = at.Line, at.Column
		if i == len(steps)-1 {
			return line, column, true
		}
		n = next
	}
	return line, column, true
}

// resolve follows document nodes and aliases to the node they stand for.
func resolve(n *yaml.Node, depth int) *yaml.Node {
	for ; n != nil && depth < maxDepth; depth++ {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

// lookup finds key in mapping m, then in what m merges ("<<": a mapping or a
// sequence of them), as YAML's merge key does: m's own keys win.
func lookup(m *yaml.Node, key string, depth int) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode || depth > maxDepth {
		return nil, nil
	}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn := m.Content[i]
		if isMerge(kn) {
			merges = append(merges, m.Content[i+1])
			continue
		}
		if kn.Kind == yaml.ScalarNode && kn.Value == key {
			return kn, m.Content[i+1]
		}
	}
	for _, mv := range merges {
		mv = resolve(mv, depth)
		if mv == nil {
			continue
		}
		if mv.Kind == yaml.SequenceNode {
			for _, item := range mv.Content {
				if k, v := lookup(resolve(item, depth), key, depth+1); k != nil {
					return k, v
				}
			}
			continue
		}
		if k, v := lookup(mv, key, depth+1); k != nil {
			return k, v
		}
	}
	return nil, nil
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!!merge") && k.Style == 0
}

// Fault is one fault that Check found: where, and what.
type Fault struct {
	Path         string // "tsa.accuracy"; "" for the document itself
	Line, Column int    // 1-based; 0 when unknown
	Message      string // `"forever" is not a duration such as 30s or 1m30s`
	// Suggestion is the known field an unknown one is probably a typo of
	// ("accuracy" for "acuracy"), or "".
	Suggestion string
	// Entry is the path of the mapping entry that holds the fault, the
	// field itself or the one around it ("tsa.hashes" for a fault at
	// "tsa.hashes[1]"): what Drop removes. "" for a fault of the document
	// as a whole.
	Entry string

	entry *yaml.Node // the key node of Entry
}

func (f *Fault) Error() string {
	if f.Path == "" {
		return f.Message
	}
	return f.Path + ": " + f.Message
}

// MaxNodes bounds the nodes Check visits (aliases may repeat a subtree):
// beyond it, Check stops with a fault.
const MaxNodes = 1 << 18

// Check walks doc (a document node or its root) beside t, the Go type it is
// to be decoded into by go.yaml.in/yaml/v3, and returns every unknown
// field, every value that does not decode into its field's type and every
// key given twice, in the order of their lines. Values of types with their own
// decoding (yaml.Unmarshaler, encoding.TextUnmarshaler, time.Duration,
// scalars) are tried with the decoder itself, so that Check accepts what
// the decoder accepts.
func Check(doc *yaml.Node, t reflect.Type) []*Fault {
	c := &checker{active: map[*yaml.Node]bool{}}
	if doc != nil && doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	if doc != nil && doc.Kind != 0 { // 0: an empty document, the zero value
		c.value(doc, t, nil)
	}
	slices.SortStableFunc(c.faults, func(a, b *Fault) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return c.faults
}

type checker struct {
	faults []*Fault
	nodes  int
	active map[*yaml.Node]bool // aliases being followed
	full   bool
	// The mapping entry being checked: its key node and path.
	entry     *yaml.Node
	entryPath []Step
}

func (c *checker) fault(n *yaml.Node, path []Step, format string, args ...any) *Fault {
	f := &Fault{Path: Format(path), Line: n.Line, Column: n.Column, Message: fmt.Sprintf(format, args...),
		Entry: Format(c.entryPath), entry: c.entry}
	c.faults = append(c.faults, f)
	return f
}

// inEntry runs check with k (at path p) as the entry being checked.
func (c *checker) inEntry(k *yaml.Node, p []Step, check func()) {
	prev, prevPath := c.entry, c.entryPath
	c.entry, c.entryPath = k, p
	defer func() { c.entry, c.entryPath = prev, prevPath }()
	check()
}

// Drop removes from doc the mapping entries that hold faults (their
// Entry): what remains decodes without them, so that the rest of the
// document can still be checked by its meaning. Faults of the document as
// a whole remove nothing.
func Drop(doc *yaml.Node, faults []*Fault) {
	drop := map[*yaml.Node]bool{}
	for _, f := range faults {
		if f.entry != nil {
			drop[f.entry] = true
		}
	}
	if len(drop) == 0 {
		return
	}
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		if n.Kind == yaml.MappingNode {
			kept := n.Content[:0]
			for i := 0; i+1 < len(n.Content); i += 2 {
				if !drop[n.Content[i]] {
					kept = append(kept, n.Content[i], n.Content[i+1])
				}
			}
			clear(n.Content[len(kept):])
			n.Content = kept
		}
		for _, child := range n.Content {
			walk(child)
		}
	}
	walk(doc)
}

var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType        = reflect.TypeFor[time.Duration]()
	nodeType            = reflect.TypeFor[yaml.Node]()
)

func (c *checker) value(n *yaml.Node, t reflect.Type, path []Step) {
	if c.full {
		return
	}
	if c.nodes++; c.nodes > MaxNodes {
		c.full = true
		c.fault(n, path, "more than %d nodes (aliases repeating a subtree?)", MaxNodes)
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || c.active[n.Alias] {
			c.fault(n, path, "alias *%s contains itself", n.Value)
			return
		}
		c.active[n.Alias] = true
		c.value(n.Alias, t, path)
		delete(c.active, n.Alias)
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			c.value(n.Content[0], t, path)
		}
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the zero value, for any type
	}
	switch {
	case t == nodeType || t.Kind() == reflect.Interface:
		return // anything goes
	case t == durationType, reflect.PointerTo(t).Implements(unmarshalerType), reflect.PointerTo(t).Implements(textUnmarshalerType),
		t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		c.leaf(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if !c.want(n, yaml.MappingNode, "a mapping of fields", path) {
			return
		}
		fields, inlineMap := structFields(t)
		c.mapping(n, path, map[string]bool{}, func(k, v *yaml.Node) {
			p := append(path[:len(path):len(path)], Step{Key: k.Value, Index: -1})
			if ft, ok := fields[k.Value]; ok {
				c.inEntry(k, p, func() { c.value(v, ft, p) })
				return
			}
			if inlineMap != nil {
				c.inEntry(k, p, func() { c.value(v, inlineMap.Elem(), p) })
				return
			}
			c.entry, c.entryPath = k, p // restored by mapping
			names := make([]string, 0, len(fields))
			for name := range fields {
				names = append(names, name)
			}
			if s := Suggest(k.Value, names); s != "" {
				c.fault(k, p, "unknown field (did you mean %s?)", s).Suggestion = s
			} else {
				c.fault(k, p, "unknown field (%s)", known(t, path))
			}
		})
	case reflect.Map:
		if !c.want(n, yaml.MappingNode, "a mapping", path) {
			return
		}
		c.mapping(n, path, map[string]bool{}, func(k, v *yaml.Node) {
			p := append(path[:len(path):len(path)], Step{Key: k.Value, Index: -1})
			c.inEntry(k, p, func() {
				if t.Key().Kind() != reflect.String {
					c.leaf(k, t.Key(), p)
				}
				c.value(v, t.Elem(), p)
			})
		})
	case reflect.Slice, reflect.Array:
		if !c.want(n, yaml.SequenceNode, "a list", path) {
			return
		}
		if t.Kind() == reflect.Array && len(n.Content) > t.Len() {
			c.fault(n, path, "%d items where at most %d fit", len(n.Content), t.Len())
		}
		for i, item := range n.Content {
			c.value(item, t.Elem(), append(path[:len(path):len(path)], Step{Index: i}))
		}
	default:
		c.leaf(n, t, path)
	}
}

// want checks that n is of kind k, a mapping or a list.
func (c *checker) want(n *yaml.Node, k yaml.Kind, what string, path []Step) bool {
	if n.Kind == k {
		return true
	}
	c.fault(n, path, "want %s, not %s", what, describe(n))
	return false
}

// mapping calls each for the keys of m and those it merges (its own keys
// win, as YAML's merge key says), and reports keys given twice.
func (c *checker) mapping(m *yaml.Node, path []Step, seen map[string]bool, each func(k, v *yaml.Node)) {
	prev, prevPath := c.entry, c.entryPath
	defer func() { c.entry, c.entryPath = prev, prevPath }()
	type pair struct{ k, v *yaml.Node }
	var merges []*yaml.Node
	var own []pair
	first := map[string]*yaml.Node{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if isMerge(k) {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			c.entry, c.entryPath = k, path
			c.fault(k, path, "a key must be a plain name, not %s", describe(k))
			c.entry, c.entryPath = prev, prevPath
			continue
		}
		if f, ok := first[k.Value]; ok {
			p := append(path[:len(path):len(path)], Step{Key: k.Value, Index: -1})
			c.entry, c.entryPath = k, p
			c.fault(k, p, "set twice (first at line %d)", f.Line)
			c.entry, c.entryPath = prev, prevPath
			continue
		}
		first[k.Value] = k
		own = append(own, pair{k, v})
	}
	for _, p := range own {
		if seen[p.k.Value] {
			continue // an outer mapping that merged this one set it
		}
		seen[p.k.Value] = true
		each(p.k, p.v)
		c.entry, c.entryPath = prev, prevPath
	}
	for _, mv := range merges {
		c.merge(mv, path, seen, each)
	}
}

func (c *checker) merge(mv *yaml.Node, path []Step, seen map[string]bool, each func(k, v *yaml.Node)) {
	if c.full {
		return
	}
	if c.nodes++; c.nodes > MaxNodes {
		c.full = true
		c.fault(mv, path, "more than %d nodes (aliases repeating a subtree?)", MaxNodes)
		return
	}
	switch mv.Kind {
	case yaml.AliasNode:
		if mv.Alias == nil || c.active[mv.Alias] {
			c.fault(mv, path, "alias *%s contains itself", mv.Value)
			return
		}
		c.active[mv.Alias] = true
		c.merge(mv.Alias, path, seen, each)
		delete(c.active, mv.Alias)
	case yaml.MappingNode:
		c.mapping(mv, path, seen, each)
	case yaml.SequenceNode:
		for _, item := range mv.Content {
			if item.Kind == yaml.SequenceNode {
				c.fault(item, path, "<< merges mappings, not %s", describe(item))
				continue
			}
			c.merge(item, path, seen, each)
		}
	default:
		c.fault(mv, path, "<< merges mappings, not %s", describe(mv))
	}
}

// leaf tries the decoder on n for a value of type t. It is stricter in one
// case: the decoder truncates 1.5 into an integer field, which hides a
// mistake.
func (c *checker) leaf(n *yaml.Node, t reflect.Type, path []Step) {
	err := n.Decode(reflect.New(t).Interface())
	if err == nil && isInt(t) && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" {
		err = errors.New("not a whole number")
	}
	if err != nil {
		c.fault(n, path, "%s", mismatch(n, t, err))
	}
}

// mismatch says in words why n is no value of type t.
func mismatch(n *yaml.Node, t reflect.Type, err error) string {
	if n.Kind != yaml.ScalarNode {
		return fmt.Sprintf("want %s, not %s", typeName(t), describe(n))
	}
	v := strconv.Quote(n.Value)
	switch {
	case t == durationType:
		return v + " is not a duration such as 30s, 1m30s or 2h"
	case t.Kind() == reflect.Bool:
		return v + " is not true or false"
	case isInt(t):
		if n.ShortTag() == "!!int" || n.ShortTag() == "!!float" {
			if n.ShortTag() == "!!int" {
				return fmt.Sprintf("%s is out of range for %s", v, typeName(t))
			}
			return v + " is not a whole number"
		}
		return v + " is not an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return v + " is not a number"
	case t.Kind() == reflect.String:
		return fmt.Sprintf("%s is not a string", v)
	}
	// A type with its own decoding: its own words, without the decoder's
	// "yaml: unmarshal errors: line N:" wrapping.
	msg := err.Error()
	if te, ok := errors.AsType[*yaml.TypeError](err); ok && len(te.Errors) > 0 {
		msg = te.Errors[0]
		if strings.HasPrefix(msg, "line ") {
			if _, rest, ok := strings.Cut(msg, ": "); ok {
				msg = rest
			}
		}
	}
	return fmt.Sprintf("%s: %s", v, strings.TrimPrefix(msg, "yaml: "))
}

func isInt(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// typeName names t for an operator, not a Go programmer.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case isInt(t):
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return "a string"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return "a list"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return "a value"
}

// describe names what n is: `"x"`, a list, a mapping.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return strconv.Quote(n.Value)
}

// known lists the fields of t, for an unknown field with no close match.
func known(t reflect.Type, path []Step) string {
	fields, _ := structFields(t)
	names := make([]string, 0, len(fields))
	for _, f := range orderedFields(t) {
		if _, ok := fields[f]; ok {
			names = append(names, f)
		}
	}
	where := "this section"
	if len(path) == 0 {
		where = "the top level"
	}
	if len(names) == 0 {
		return where + " has no fields"
	}
	return where + " has " + strings.Join(names, ", ")
}

// structFields returns the YAML keys of struct t (inline structs
// flattened) and the element type of its inline map, as
// go.yaml.in/yaml/v3 names them: the tag's name, or the field's name in
// lower case; "-" and unexported fields skipped.
func structFields(t reflect.Type) (map[string]reflect.Type, reflect.Type) {
	fields := map[string]reflect.Type{}
	var inlineMap reflect.Type
	var walk func(t reflect.Type, depth int)
	walk = func(t reflect.Type, depth int) {
		if depth > maxDepth {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, inline, ok := fieldKey(f)
			if !ok {
				continue
			}
			if inline {
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				switch ft.Kind() {
				case reflect.Map:
					inlineMap = ft
				case reflect.Struct:
					walk(ft, depth+1)
				}
				continue
			}
			fields[name] = f.Type
		}
	}
	walk(t, 0)
	return fields, inlineMap
}

// orderedFields lists the keys of struct t in declaration order.
func orderedFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, inline, ok := fieldKey(f)
		switch {
		case !ok:
		case inline:
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, orderedFields(ft)...)
			}
		default:
			out = append(out, name)
		}
	}
	return out
}

func fieldKey(f reflect.StructField) (name string, inline, ok bool) {
	if f.PkgPath != "" && !f.Anonymous {
		return "", false, false
	}
	tag := f.Tag.Get("yaml")
	if tag == "" && !strings.Contains(string(f.Tag), ":") {
		tag = string(f.Tag)
	}
	if tag == "-" {
		return "", false, false
	}
	name, flags, _ := strings.Cut(tag, ",")
	for flag := range strings.SplitSeq(flags, ",") {
		inline = inline || flag == "inline"
	}
	if inline {
		return "", true, true
	}
	if f.PkgPath != "" {
		return "", false, false // an unexported embedded type, not inlined
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false, true
}

// Suggest returns the candidate closest to word by edit distance
// (Damerau-Levenshtein: a swap of two neighbours counts one), if it is
// close enough to be a typo: at most a third of word's length in edits (at
// least 1, at most 2), so that "tls" does not suggest "tsa". A match
// ignoring case wins; of two as close, the first in sorted order.
func Suggest(word string, candidates []string) string {
	best, bestD := "", 0
	for _, c := range candidates {
		if strings.EqualFold(c, word) {
			return c
		}
		d := distance(strings.ToLower(word), strings.ToLower(c))
		if best == "" || d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	limit := min(2, max(1, len([]rune(word))/3))
	if best == "" || bestD > limit {
		return ""
	}
	return best
}

// maxWord bounds the words distance compares (quadratic time).
const maxWord = 256

// distance is the optimal string alignment distance of a and b.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > maxWord || len(rb) > maxWord {
		return max(len(ra), len(rb))
	}
	// Three rows: two back for transpositions.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
