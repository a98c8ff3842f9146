package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"pec/hsm"
	"pec/internal/devpki"
	"pec/middleoffice"
)

// `pec init --join DIR --dir NEWDIR` makes another node of DIR's platform.
//
// What the nodes share, and how:
//   - the certificates and trust anchors: DIR/pki is copied to NEWDIR/pki
//     (the development CA's state, pki/ca-state.json, excepted: the CA is
//     DIR's, and the certificates name DIR's CRL and OCSP responder);
//   - the keys: a PKCS#11 token is shared, not copied — the new node names
//     the same module, token and (for SoftHSM2) the same configuration
//     file, so the same token directory, as nodes share a network HSM in
//     production; the keys stay non-extractable. Its PIN file is copied
//     beside it (mode 0600). Software keys (PKCS#8 files) are copied, the
//     development CA's root key excepted;
//   - the evidence log: the same PostgreSQL (proof.postgres_url_env, and
//     whatever else pec.yaml keeps there): DIR must be on PostgreSQL;
//   - the rest of pec.yaml (policy, profiles, directory, exchange): the
//     new pec.yaml is DIR's, its comments kept, with only these changes.
//
// What each node has of its own: tsa.node_id (serials are node_id<<64 |
// counter: distinct ids never collide), the data directory (serial file,
// journal, checkpoint file, the embedded stores), the listen addresses
// (DIR's ports plus 10 for each node id between them, or --listen), and no
// devca section.
//
// The node ids handed out are listed in the first node's directory
// (FIRST/nodes); a joined node's file names that list, so that a join from
// any node of the platform on this machine picks an id no other has.

// nodesFile is the list of a platform's nodes, in the first node's
// directory; in a joined node's, the line "list PATH" names the first's.
const nodesFile = "nodes"

// joinDeadline bounds the key checks of a join.
const joinDeadline = time.Minute

// portStep is how far apart, per node id, the default ports of joined
// nodes are: node 1 of a node 0 listening on 8318 listens on 8328.
const portStep = 10

type joinOptions struct {
	from    string            // DIR
	dir     string            // NEWDIR
	nodeID  int               // -1: the next free one
	listens map[string]string // --listen overrides
}

// joinNode makes opts.dir a node of the platform of opts.from. It refuses
// a directory holding a pec.yaml and removes what it created when it fails
// half-way. It writes into opts.from only the list of nodes.
func joinNode(ctx context.Context, opts joinOptions, out io.Writer) (err error) {
	from, err := filepath.Abs(opts.from)
	if err != nil {
		return inputError(err)
	}
	dir, err := filepath.Abs(opts.dir)
	if err != nil {
		return inputError(err)
	}
	if from == dir {
		return usageError("--join %s --dir %s: the new node needs a directory of its own", opts.from, opts.dir)
	}
	cfgPath := filepath.Join(dir, "pec.yaml")
	if _, err := os.Stat(cfgPath); err == nil {
		return usageError("%s already exists: init changes nothing in a configured directory", cfgPath)
	}
	srcPath := filepath.Join(from, "pec.yaml")
	src, err := os.ReadFile(srcPath)
	if err != nil {
		return usageError("--join %s: %v (DIR is the directory of a node, holding its pec.yaml)", opts.from, err)
	}
	cfg, err := LoadConfig(srcPath)
	if err != nil {
		return inputError(err)
	}
	if !cfg.Proof.Configured() || cfg.Proof.PostgresURLEnv == "" {
		return usageError("%s: proof.postgres_url_env is empty: the evidence log is this node's own file (proof.file), "+
			"which no other node can share; set proof.postgres_url_env to a variable holding a PostgreSQL URL, then join", srcPath)
	}

	nodes, err := openNodeList(from, cfg.TSA.NodeID)
	if err != nil && opts.nodeID < 0 {
		return usageError("%v: give --node-id N, distinct from every node's tsa.node_id", err)
	}
	id := opts.nodeID
	if nodes != nil {
		if id < 0 {
			id = nodes.next()
		} else if other, taken := nodes.owner(id); taken {
			return usageError("--node-id %d: %s has it (%s): serials of two nodes with one id collide", id, other, nodes.path)
		}
	} else if id == cfg.TSA.NodeID {
		return usageError("--node-id %d: %s has it: serials of two nodes with one id collide", id, from)
	}
	if id > 0xffff {
		return usageError("no tsa.node_id left within 0-65535 (%s)", nodes.path)
	}
	listens, err := joinListens(cfg.Listen, id-cfg.TSA.NodeID, opts.listens)
	if err != nil {
		return err
	}

	created, err := makeDirs(dir, "data")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.RemoveAll(created[i])
			}
		}
	}()
	if err := copyTree(filepath.Join(from, "pki"), filepath.Join(dir, "pki"), func(rel string) bool {
		// The development CA stays DIR's: its state, and the lock of it.
		return rel != "ca-state.json" && rel != "ca-state.json.lock"
	}); err != nil {
		return fmt.Errorf("copy the certificates: %w", err)
	}

	doc, err := parseNode(src)
	if err != nil {
		return inputError(fmt.Errorf("%s: %w", srcPath, err))
	}
	ed := newYAMLEditor(src, doc)
	ed.set("tsa.node_id", strconv.Itoa(id))
	for _, name := range serviceNames {
		if addr, ok := listens[name]; ok {
			ed.set("listen."+name, strconv.Quote(addr))
		}
	}
	keysLine, err := joinKeys(ed, cfg, from, dir)
	if err != nil {
		return err
	}
	if cfg.DevCA.Configured() {
		ed.remove("devca", fmt.Sprintf("# No devca section: the development CA is that of the node in %s, whose CRL and OCSP\n"+
			"# responder (%s) the certificates name: `pec ca issue|revoke --dir %s`.\n", from, cfg.DevCA.URL, from))
	}
	ed.insertTop(fmt.Sprintf("# Node %d of the platform of %s, made by `pec init --join`. It shares with the other\n"+
		"# nodes the certificates (pki/, copied), the keys (the hsm section) and the evidence log (PostgreSQL,\n"+
		"# $%s); it has its own tsa.node_id, data directory (serial file, journal, checkpoint file) and\n"+
		"# listen addresses. The list of the platform's nodes: %s.\n#\n", id, from, cfg.Proof.PostgresURLEnv, listPath(nodes)))
	edited, err := ed.apply()
	if err != nil {
		return inputError(fmt.Errorf("%s: %w; make the new node by hand (README: Several nodes)", srcPath, err))
	}
	if err := writeFile(cfgPath, edited, 0o644); err != nil {
		return err
	}
	joined, err := LoadConfig(cfgPath)
	if err != nil {
		return failure(fmt.Errorf("the pec.yaml made from %s is refused: %w", srcPath, err))
	}
	// The keys' generations (pec keys rotate): the same keys as the first
	// node's, rotated ones included, from the first start.
	if state, err := os.ReadFile(keyStatePath(cfg)); err == nil {
		if err := writeFile(keyStatePath(joined), state, 0o600); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return failure(fmt.Errorf("the key state of %s: %w", from, err))
	}
	if err := checkJoinedKeys(ctx, joined); err != nil {
		return failure(err)
	}
	if nodes != nil {
		if err := nodes.add(id, dir); err != nil {
			return fmt.Errorf("record the node in %s: %w", nodes.path, err)
		}
		if err := writeFile(filepath.Join(dir, nodesFile), []byte("# The nodes of this platform are listed in the first node's directory.\nlist "+nodes.path+"\n"), 0o644); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "pec init: wrote %s, node %d of the platform of %s\n", cfgPath, id, from)
	var addrs []string
	for _, name := range serviceNames {
		if a := listens[name]; a != "" {
			addrs = append(addrs, name+" "+a)
		}
	}
	fmt.Fprintf(out, "  tsa.node_id: %d (%s: %d); its own data in %s\n", id, from, cfg.TSA.NodeID, joined.DataDir)
	fmt.Fprintf(out, "  listen: %s\n", cmpOr(strings.Join(addrs, ", "), "none"))
	fmt.Fprintf(out, "  keys: %s\n", keysLine)
	fmt.Fprintf(out, "  certificates: %s copied to %s\n", filepath.Join(from, "pki"), filepath.Join(dir, "pki"))
	fmt.Fprintf(out, "  evidence log: the PostgreSQL of $%s, shared\n", cfg.Proof.PostgresURLEnv)
	if cfg.DevCA.Configured() {
		fmt.Fprintf(out, "  development CA: that of %s (pec ca issue|revoke --dir %s); this node serves none\n", from, from)
	}
	for _, n := range joinNotes(doc, cfg, from) {
		fmt.Fprintf(out, "  note: %s\n", n)
	}
	if nodes == nil {
		fmt.Fprintf(out, "  note: no list of the platform's nodes was readable here: keep tsa.node_id %d for this node alone\n", id)
	}
	return nil
}

// joinListens returns the new node's listen addresses: DIR's, each port
// moved by portStep per node id between them, then the overrides.
func joinListens(l ListenConfig, idDelta int, overrides map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for _, name := range serviceNames {
		addr := *l.addr(name)
		if o, ok := overrides[name]; ok {
			out[name] = o
			continue
		}
		if addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, usageError("listen.%s: %q is not HOST:PORT", name, addr)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, usageError("listen.%s: %q: the port is not a number: give --listen %s=HOST:PORT", name, addr, name)
		}
		if p != 0 {
			p += portStep * idDelta
		}
		if p < 0 || p > 65535 {
			return nil, usageError("listen.%s: %s moved by %d is not a port: give --listen %s=HOST:PORT", name, addr, portStep*idDelta, name)
		}
		out[name] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return out, nil
}

// joinKeys changes the hsm section for the new node and copies what must
// be copied; it returns what to say of the keys.
func joinKeys(ed *yamlEditor, cfg *File, from, dir string) (string, error) {
	h := cfg.HSM
	if h.Module == "" {
		// Software keys: files, copied (relative key_dir), or shared (an
		// absolute one). The development CA's root key stays DIR's.
		if raw, _ := ed.value("hsm.key_dir"); filepath.IsAbs(raw) {
			return "the software keys of " + h.KeyDir + ", shared", nil
		}
		rel, err := filepath.Rel(from, h.KeyDir)
		if err != nil || strings.HasPrefix(rel, "..") {
			return "", usageError("hsm.key_dir %s: outside %s; make it absolute to share it", h.KeyDir, from)
		}
		caKey := cfg.DevCA.KeyLabel + ".key"
		if err := copyTree(h.KeyDir, filepath.Join(dir, rel), func(p string) bool {
			return !cfg.DevCA.Configured() || p != caKey
		}); err != nil {
			return "", fmt.Errorf("copy the software keys: %w", err)
		}
		return "software keys copied from " + h.KeyDir + " to " + filepath.Join(dir, rel), nil
	}
	token := cmpOr(h.TokenLabel, h.TokenSerial)
	what := fmt.Sprintf("the token %q of %s, shared", token, h.Module)
	if h.SoftHSM2Conf != "" {
		// The same SoftHSM2 configuration: the same token directory.
		ed.set("hsm.softhsm2_conf", strconv.Quote(h.SoftHSM2Conf))
		what = fmt.Sprintf("the SoftHSM2 token %q of %s, shared", token, h.SoftHSM2Conf)
	}
	if h.PINFile != "" {
		if raw, _ := ed.value("hsm.pin_file"); !filepath.IsAbs(raw) {
			rel, err := filepath.Rel(from, h.PINFile)
			if err != nil || strings.HasPrefix(rel, "..") {
				ed.set("hsm.pin_file", strconv.Quote(h.PINFile))
			} else {
				pin, err := os.ReadFile(h.PINFile)
				if err != nil {
					return "", usageError("hsm.pin_file: %v", err)
				}
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o700); err != nil {
					return "", err
				}
				if err := writeFile(filepath.Join(dir, rel), pin, 0o600); err != nil {
					return "", err
				}
				what += ", its PIN copied to " + filepath.Join(dir, rel)
			}
		}
	}
	return what, nil
}

// checkJoinedKeys opens the new node's keys and checks that each of its
// certificates is its key's: the TSA's, the evidence log's (without it the
// shared log is refused: "no signature of ORIGIN"), the API's and the
// signature profiles'.
func checkJoinedKeys(ctx context.Context, cfg *File) error {
	ctx, cancel := context.WithTimeout(ctx, joinDeadline)
	defer cancel()
	keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{})
	if err != nil {
		return fmt.Errorf("open the keys of the new node: %w", err)
	}
	defer keys.Close()
	type pair struct{ field, label, cert string }
	pairs := []pair{{"tsa", cfg.TSA.KeyLabel, cfg.TSA.CertFile}, {"proof", cfg.Proof.KeyLabel, cfg.Proof.CertFile}}
	if cfg.TLS.KeyLabel != "" && cfg.TLS.CertFile != "" {
		pairs = append(pairs, pair{"tls", cfg.TLS.KeyLabel, cfg.TLS.CertFile})
	}
	for _, p := range cfg.Signing.Profiles {
		pairs = append(pairs, pair{"signing profile " + p.Name, p.KeyLabel, p.CertFile})
	}
	for _, p := range pairs {
		signer, err := keys.Signer(ctx, p.label)
		if err != nil {
			return fmt.Errorf("%s: key %q: %w", p.field, p.label, err)
		}
		certs, err := devpki.LoadCertsPEM(p.cert)
		if err != nil || len(certs) == 0 {
			return fmt.Errorf("%s: %s: %v", p.field, p.cert, err)
		}
		if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(certs[0].PublicKey) {
			return fmt.Errorf("%s: the key %q is not the key of %s", p.field, p.label, p.cert)
		}
	}
	return nil
}

// joinNotes says what the nodes do not share as DIR's pec.yaml stands.
func joinNotes(doc *yaml.Node, cfg *File, from string) []string {
	var notes []string
	if filepath.IsAbs(scalarAt(doc, "data_dir")) {
		notes = append(notes, fmt.Sprintf("data_dir %s is absolute: this node uses the same path, which must be on another machine", cfg.DataDir))
	}
	// exchange.store and directory.store: "postgres" shares them, in a
	// build that has them.
	for _, s := range []struct {
		section, what string
		used          bool
		t             reflect.Type
	}{
		{"exchange", "the exchanges of each node are its own", cfg.Exchange.Configured(), reflect.TypeFor[ExchangeConfig]()},
		{"directory", "partners changed through one node's API are that node's", true, reflect.TypeFor[middleoffice.Config]()},
	} {
		if !s.used || scalarAt(doc, s.section+".store") == "postgres" {
			continue
		}
		if hasYAMLField(s.t, "store") {
			notes = append(notes, fmt.Sprintf("%s (%s.store is not postgres): set %s.store: postgres on every node to share them", s.what, s.section, s.section))
		} else {
			notes = append(notes, s.what+" (kept in its data directory)")
		}
	}
	return notes
}

// hasYAMLField reports whether struct type t (its inlined structs
// included) decodes the YAML key name.
func hasYAMLField(t reflect.Type, name string) bool {
	for f := range t.Fields() {
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct:
			if hasYAMLField(f.Type, name) {
				return true
			}
		case tag == name:
			return true
		}
	}
	return false
}

func listPath(l *nodeList) string {
	if l == nil {
		return "none readable when it was made"
	}
	return l.path
}

// copyTree copies the regular files under src that keep (given their
// path relative to src) accepts into dst, with their modes.
func copyTree(src, dst string, keep func(rel string) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() || !keep(filepath.ToSlash(rel)) || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return writeFile(filepath.Join(dst, rel), data, info.Mode().Perm())
	})
}

// nodeList is the list of a platform's nodes: each node id handed out and
// the directory of its node. It is not safe for concurrent use.
type nodeList struct {
	path  string
	nodes []listedNode
}

type listedNode struct {
	id  int
	dir string
}

// openNodeList returns the list of DIR's platform: DIR/nodes, or the list
// it names; a new one, holding DIR as node id, when DIR has none.
func openNodeList(dir string, id int) (*nodeList, error) {
	path := filepath.Join(dir, nodesFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &nodeList{path: path, nodes: []listedNode{{id, dir}}}, nil
	}
	if err != nil {
		return nil, err
	}
	nodes, list, err := parseNodeList(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if list != "" {
		path = list
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("the nodes of the platform: %w", err)
		}
		if nodes, list, err = parseNodeList(data); err != nil || list != "" {
			return nil, fmt.Errorf("%s: %w", path, cmpErr(err, errors.New("names another list: the first node's list holds the nodes")))
		}
	}
	l := &nodeList{path: path, nodes: nodes}
	if _, ok := l.owner(id); !ok {
		l.nodes = append(l.nodes, listedNode{id, dir})
	}
	return l, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// maxNodeListBytes bounds a node list: 65,536 nodes of long paths.
const maxNodeListBytes = 1 << 24

// parseNodeList reads a node list: "#" comments, blank lines, and either
// lines "ID DIR" (ID in 0-65535, each once, DIR an absolute path) or one
// line "list PATH" naming the list that holds them.
func parseNodeList(data []byte) (nodes []listedNode, list string, err error) {
	if len(data) > maxNodeListBytes {
		return nil, "", fmt.Errorf("longer than %d bytes", maxNodeListBytes)
	}
	if !utf8.Valid(data) {
		return nil, "", errors.New("not UTF-8 text")
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxNodeListBytes)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		first, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		if rest == "" || !filepath.IsAbs(rest) {
			return nil, "", fmt.Errorf("line %d: want \"ID DIR\" or \"list PATH\", with an absolute path", n)
		}
		if first == "list" {
			if list != "" || len(nodes) > 0 {
				return nil, "", fmt.Errorf("line %d: \"list PATH\" is the only entry of a list that names another", n)
			}
			list = rest
			continue
		}
		if list != "" {
			return nil, "", fmt.Errorf("line %d: \"list PATH\" is the only entry of a list that names another", n)
		}
		id, err := strconv.Atoi(first)
		if err != nil || id < 0 || id > 0xffff || first != strconv.Itoa(id) {
			return nil, "", fmt.Errorf("line %d: %q is not a node id (0-65535)", n, first)
		}
		if slices.ContainsFunc(nodes, func(x listedNode) bool { return x.id == id }) {
			return nil, "", fmt.Errorf("line %d: node id %d listed twice", n, id)
		}
		nodes = append(nodes, listedNode{id, rest})
	}
	return nodes, list, nil
}

func (l *nodeList) owner(id int) (string, bool) {
	for _, n := range l.nodes {
		if n.id == id {
			return n.dir, true
		}
	}
	return "", false
}

// next is one more than the highest id listed.
func (l *nodeList) next() int {
	next := 0
	for _, n := range l.nodes {
		next = max(next, n.id+1)
	}
	return next
}

// add lists node id, in dir, and writes the list.
func (l *nodeList) add(id int, dir string) error {
	l.nodes = append(l.nodes, listedNode{id, dir})
	return writeFile(l.path, l.text(), 0o644)
}

// text is the list as its file holds it.
func (l *nodeList) text() []byte {
	var b strings.Builder
	b.WriteString("# The nodes of this PEC platform (pec init --join): tsa.node_id, then the node's directory.\n")
	b.WriteString("# Serial numbers are node_id<<64 | counter: no two nodes may have one id.\n")
	for _, n := range l.nodes {
		fmt.Fprintf(&b, "%d %s\n", n.id, n.dir)
	}
	return []byte(b.String())
}

// parseNode returns the mapping at the top of a YAML document.
func parseNode(src []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	return doc.Content[0], nil
}

// lookup returns the key and value nodes of a dotted path of mappings.
func lookup(m *yaml.Node, path string) (key, value *yaml.Node) {
	for _, step := range strings.Split(path, ".") {
		if m == nil || m.Kind != yaml.MappingNode {
			return nil, nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == step {
				key, next = m.Content[i], m.Content[i+1]
			}
		}
		if next == nil {
			return nil, nil
		}
		m = next
	}
	return key, m
}

func scalarAt(m *yaml.Node, path string) string {
	if _, v := lookup(m, path); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

// yamlEditor changes scalar values of a YAML file in place, inserts and
// removes entries, and leaves every other byte as it was: the comments
// and the layout of the file the new node's is made from.
type yamlEditor struct {
	src   []byte
	doc   *yaml.Node
	lines []int // offset of each line's start
	edits []textEdit
	want  []intent
	err   error
}

// intent is what an edit means, checked on the result.
type intent struct {
	path   string
	value  string // YAML text of the new value; remove: ""
	remove bool
}

type textEdit struct {
	start, end int
	text       string
}

func newYAMLEditor(src []byte, doc *yaml.Node) *yamlEditor {
	e := &yamlEditor{src: src, doc: doc, lines: []int{0}}
	for i, c := range src {
		if c == '\n' {
			e.lines = append(e.lines, i+1)
		}
	}
	return e
}

func (e *yamlEditor) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf(format, args...)
	}
}

// offset is the byte offset of a node's line and column (1-based, the
// column in characters).
func (e *yamlEditor) offset(line, col int) (int, bool) {
	if line < 1 || line > len(e.lines) || col < 1 {
		return 0, false
	}
	off := e.lines[line-1]
	for range col - 1 {
		if off >= len(e.src) || e.src[off] == '\n' {
			return 0, false
		}
		_, size := utf8.DecodeRune(e.src[off:])
		off += size
	}
	return off, true
}

func (e *yamlEditor) lineEnd(off int) int {
	if i := bytes.IndexByte(e.src[off:], '\n'); i >= 0 {
		return off + i
	}
	return len(e.src)
}

// value returns the value of a scalar at path as the file has it.
func (e *yamlEditor) value(path string) (string, bool) {
	_, v := lookup(e.doc, path)
	if v == nil || v.Kind != yaml.ScalarNode {
		return "", false
	}
	return v.Value, true
}

// set gives the entry at path (mappings, then a scalar) the value text,
// written as it is (quote it). A missing last entry is inserted into its
// block mapping.
func (e *yamlEditor) set(path, text string) {
	e.want = append(e.want, intent{path: path, value: text})
	key, v := lookup(e.doc, path)
	if v == nil {
		parent, name := "", path
		if i := strings.LastIndexByte(path, '.'); i >= 0 {
			parent, name = path[:i], path[i+1:]
		}
		e.insert(parent, name, text)
		return
	}
	if v.Kind != yaml.ScalarNode {
		e.fail("%s: not a single value", path)
		return
	}
	if v.Tag == "!!null" && v.Value == "" && v.Line == key.Line {
		// "name:" with nothing after it.
		start, ok := e.offset(key.Line, key.Column)
		colon := bytes.IndexByte(e.src[start:e.lineEnd(start)], ':')
		if !ok || colon < 0 {
			e.fail("%s: cannot find its place in the file", path)
			return
		}
		e.edits = append(e.edits, textEdit{start + colon + 1, start + colon + 1, " " + text})
		return
	}
	start, ok := e.offset(v.Line, v.Column)
	if !ok {
		e.fail("%s: cannot find its place in the file", path)
		return
	}
	end, ok := e.scalarEnd(v, start)
	if !ok {
		e.fail("%s: written in a form this edit does not handle (one line, plain or quoted)", path)
		return
	}
	e.edits = append(e.edits, textEdit{start, end, text})
}

// scalarEnd is the end of a one-line scalar starting at start.
func (e *yamlEditor) scalarEnd(v *yaml.Node, start int) (int, bool) {
	line := e.src[start:e.lineEnd(start)]
	switch v.Style {
	case yaml.DoubleQuotedStyle:
		for i := 1; i < len(line); i++ {
			switch line[i] {
			case '\\':
				i++
			case '"':
				return start + i + 1, true
			}
		}
	case yaml.SingleQuotedStyle:
		for i := 1; i < len(line); i++ {
			if line[i] == '\'' {
				if i+1 < len(line) && line[i+1] == '\'' {
					i++
					continue
				}
				return start + i + 1, true
			}
		}
	case 0:
		tok := line
		if i := bytes.Index(tok, []byte(" #")); i >= 0 {
			tok = tok[:i]
		}
		tok = bytes.TrimRight(tok, " \t\r")
		if string(tok) == v.Value {
			return start + len(tok), true
		}
	}
	return 0, false
}

// insert adds "name: text" to the block mapping at parent (the top level
// for ""), before its first entry, or a new section at the end of the file.
func (e *yamlEditor) insert(parent, name, text string) {
	m := e.doc
	if parent != "" {
		_, m = lookup(e.doc, parent)
	}
	top := e.doc
	switch {
	case m == nil && !strings.Contains(parent, ".") && top.Style&yaml.FlowStyle == 0 && len(top.Content) > 0 && e.startsLine(top.Content[0]):
		// A new section, at the indentation of the others.
		indent := strings.Repeat(" ", top.Content[0].Column-1)
		var b strings.Builder
		if len(e.src) > 0 && e.src[len(e.src)-1] != '\n' {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "\n%s%s:\n%s  %s: %s\n", indent, parent, indent, name, text)
		e.edits = append(e.edits, textEdit{len(e.src), len(e.src), b.String()})
	case m == nil || m.Kind != yaml.MappingNode || m.Style&yaml.FlowStyle != 0 || len(m.Content) == 0 || !e.startsLine(m.Content[0]):
		e.fail("%s: not a block mapping to add %s to", cmpOr(parent, "the top level"), name)
	default:
		first := m.Content[0]
		off, ok := e.offset(first.Line, 1)
		if !ok {
			e.fail("%s: cannot find its place in the file", parent)
			return
		}
		line := fmt.Sprintf("%s%s: %s\n", strings.Repeat(" ", first.Column-1), name, text)
		e.edits = append(e.edits, textEdit{off, off, line})
	}
}

// startsLine reports whether only spaces precede node n on its line.
func (e *yamlEditor) startsLine(n *yaml.Node) bool {
	start, ok := e.offset(n.Line, 1)
	off, ok2 := e.offset(n.Line, n.Column)
	return ok && ok2 && strings.Trim(string(e.src[start:off]), " ") == ""
}

// remove deletes a top-level section with the comment block right above
// it, and puts comment in its place.
func (e *yamlEditor) remove(name, comment string) {
	e.want = append(e.want, intent{path: name, remove: true})
	m := e.doc
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Value != name {
			continue
		}
		if k.Column != 1 {
			e.fail("%s: not at the start of its line", name)
			return
		}
		first := k.Line
		for first > 1 && e.isComment(first-1) {
			first--
		}
		last := len(e.lines) // up to the end of the file
		if i+2 < len(m.Content) {
			next := m.Content[i+2].Line
			for next > 1 && e.isComment(next-1) {
				next--
			}
			last = next - 1
		}
		start, _ := e.offset(first, 1)
		end := len(e.src)
		if last < len(e.lines) {
			end = e.lines[last]
		}
		e.edits = append(e.edits, textEdit{start, end, comment + "\n"})
		return
	}
}

// isComment reports whether line n (1-based) is a comment at column 1.
func (e *yamlEditor) isComment(n int) bool {
	off := e.lines[n-1]
	return off < len(e.src) && e.src[off] == '#'
}

func (e *yamlEditor) insertTop(text string) {
	e.edits = append(e.edits, textEdit{0, 0, text})
}

// apply returns the edited file, or the first edit that could not be made.
func (e *yamlEditor) apply() ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	edits := slices.Clone(e.edits)
	// Last first, so that earlier offsets hold; insertions at one place
	// keep their order.
	slices.SortStableFunc(edits, func(a, b textEdit) int { return b.start - a.start })
	out := slices.Clone(e.src)
	prev := len(e.src) + 1
	for _, ed := range edits {
		if ed.end > prev && ed.start != ed.end {
			return nil, errors.New("overlapping changes")
		}
		out = slices.Concat(out[:ed.start], []byte(ed.text), out[ed.end:])
		prev = ed.start
	}
	if err := e.check(out); err != nil {
		return nil, err
	}
	return out, nil
}

// check decodes the edited file and the original with the edits' intents
// applied: the two must be equal. A layout the edits misread (an anchor,
// a value that goes on over the next line) is refused so, never written.
func (e *yamlEditor) check(out []byte) error {
	var want, got any
	if err := yaml.Unmarshal(e.src, &want); err != nil {
		return err
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		return errors.New("the edited file would not parse: a layout this edit does not handle")
	}
	for _, in := range e.want {
		var v any
		if !in.remove {
			if err := yaml.Unmarshal([]byte(in.value), &v); err != nil {
				return fmt.Errorf("%s: %w", in.path, err)
			}
		}
		var ok bool
		if want, ok = setPath(want, strings.Split(in.path, "."), v, in.remove); !ok {
			return fmt.Errorf("%s: not in a mapping", in.path)
		}
	}
	if !reflect.DeepEqual(want, got) {
		return errors.New("the edited file does not say what it should: a layout this edit does not handle")
	}
	return nil
}

// setPath sets (or deletes) the entry at path of a decoded YAML value,
// making the mappings missing on the way.
func setPath(doc any, path []string, v any, del bool) (any, bool) {
	if doc == nil {
		doc = map[string]any{}
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return doc, false
	}
	if len(path) == 1 {
		if del {
			delete(m, path[0])
		} else {
			m[path[0]] = v
		}
		return m, true
	}
	sub, ok := setPath(m[path[0]], path[1:], v, del)
	if !ok {
		return doc, false
	}
	m[path[0]] = sub
	return m, true
}
