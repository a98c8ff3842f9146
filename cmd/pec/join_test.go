package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"pec/configs"
)

// firstNode makes a development node with software keys (no SoftHSM2 in
// this process: the testscripts' nodes have the tokens) whose evidence log
// is on PostgreSQL, as a join needs; no database is reached by a join.
func firstNode(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "node1")
	if err := initNode(t.Context(), initOptions{dir: dir, softwareKeys: true}, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	setInFile(t, filepath.Join(dir, "pec.yaml"), `postgres_url_env: ""`, `postgres_url_env: PEC_PG_URL`)
	return dir
}

func setInFile(t testing.TB, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%q not in %s", old, path)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exitCode(err error) int {
	if e, ok := errors.AsType[*exitError](err); ok {
		return e.code
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestJoinSoftwareKeys: a node with software keys is joined with copies of
// its keys, the development CA's root key excepted; the new pec.yaml is the
// first's with its own node id, ports and no devca section, and loads.
func TestJoinSoftwareKeys(t *testing.T) {
	from := firstNode(t)
	// The first node rotated its TSA key: the new node starts with the
	// same generations (keys.json), the rotated key among the keys.
	var rotOut, rotErr bytes.Buffer
	if code := run([]string{"keys", "rotate", "--config", filepath.Join(from, "pec.yaml"), "tsa"}, nil, &rotOut, &rotErr); code != exitOK {
		t.Fatalf("pec keys rotate: exit %d: %s", code, rotErr.String())
	}
	dir := filepath.Join(filepath.Dir(from), "node2")
	var out bytes.Buffer
	if err := joinNode(t.Context(), joinOptions{from: from, dir: dir, nodeID: -1}, &out); err != nil {
		t.Fatal(err)
	}
	stateA, err1 := os.ReadFile(filepath.Join(from, "data", keyStateName))
	stateB, err2 := os.ReadFile(filepath.Join(dir, "data", keyStateName))
	if err1 != nil || err2 != nil || !bytes.Equal(stateA, stateB) {
		t.Errorf("the key state is not the first node's: %v, %v", err1, err2)
	}
	cfg, err := LoadConfig(filepath.Join(dir, "pec.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TSA.NodeID != 1 {
		t.Errorf("tsa.node_id = %d, want 1", cfg.TSA.NodeID)
	}
	want := ListenConfig{TSA: "127.0.0.1:8328", API: "127.0.0.1:8453", Ops: "127.0.0.1:8329", MaxInFlight: 1024}
	if cfg.Listen != want {
		t.Errorf("listen = %+v, want %+v", cfg.Listen, want)
	}
	if cfg.DevCA.Configured() {
		t.Error("the joined node has a devca section")
	}
	if cfg.DataDir != filepath.Join(dir, "data") || cfg.TSA.SerialFile != filepath.Join(dir, "data", "tsa-serials") {
		t.Errorf("data_dir %s, serial_file %s: not the new node's", cfg.DataDir, cfg.TSA.SerialFile)
	}
	if cfg.HSM.KeyDir != filepath.Join(dir, "keys") {
		t.Errorf("hsm.key_dir = %s", cfg.HSM.KeyDir)
	}
	for _, label := range []string{"tsa", "proof", "tls-server", "signing"} {
		a, err1 := os.ReadFile(filepath.Join(from, "keys", label+".key"))
		b, err2 := os.ReadFile(filepath.Join(dir, "keys", label+".key"))
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("key %s: not copied (%v, %v)", label, err1, err2)
		}
		if fi, err := os.Stat(filepath.Join(dir, "keys", label+".key")); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("key %s: mode %v", label, fi.Mode().Perm())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keys", "root-ca.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the development CA's key was copied: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "ca-state.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the development CA's state was copied: %v", err)
	}
	for _, f := range []string{"root-ca.pem", "tsa.pem", "proof.pem", "server.pem", "signing.pem", "clients/partner-a.pem", "clients/partner-a.key"} {
		a, _ := os.ReadFile(filepath.Join(from, "pki", f))
		b, err := os.ReadFile(filepath.Join(dir, "pki", f))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("pki/%s: not copied (%v)", f, err)
		}
	}
	if !strings.Contains(out.String(), "keys: software keys copied from "+filepath.Join(from, "keys")) {
		t.Errorf("join printed:\n%s", out.String())
	}
	// The comments of the first node's file are kept.
	data, _ := os.ReadFile(filepath.Join(dir, "pec.yaml"))
	if !bytes.Contains(data, []byte("# RFC 3161 time-stamping authority, ETSI EN 319 422 profile.")) {
		t.Error("the comments of pec.yaml are lost")
	}
}

// TestJoinRefusals: every refusal is a usage or input error (exit 2) that
// leaves no new directory behind.
func TestJoinRefusals(t *testing.T) {
	from := firstNode(t)
	base := filepath.Dir(from)
	embedded := filepath.Join(base, "embedded")
	if err := initNode(t.Context(), initOptions{dir: embedded, softwareKeys: true}, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	damaged := firstNode(t)
	if err := os.WriteFile(filepath.Join(damaged, nodesFile), []byte("0 relative/path\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	joined := filepath.Join(base, "joined")
	if err := joinNode(t.Context(), joinOptions{from: from, dir: joined, nodeID: -1}, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts joinOptions
		want string
	}{
		{"embedded log", joinOptions{from: embedded, nodeID: -1}, "proof.postgres_url_env is empty"},
		{"not a node", joinOptions{from: base, nodeID: -1}, "DIR is the directory of a node"},
		{"itself", joinOptions{from: from, dir: from, nodeID: -1}, "needs a directory of its own"},
		{"configured directory", joinOptions{from: from, dir: joined, nodeID: -1}, "already exists"},
		{"the first node's id", joinOptions{from: from, nodeID: 0}, "--node-id 0: " + from + " has it"},
		{"a joined node's id", joinOptions{from: from, nodeID: 1}, "--node-id 1: " + joined + " has it"},
		{"its id, from the joined node", joinOptions{from: joined, nodeID: 0}, "--node-id 0: " + from + " has it"},
		{"damaged list", joinOptions{from: damaged, nodeID: -1}, "give --node-id N"},
		{"port out of range", joinOptions{from: from, nodeID: 6000}, "is not a port: give --listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.opts.dir
			if dir == "" {
				dir = filepath.Join(base, "new")
				tc.opts.dir = dir
			}
			_, before := os.Stat(filepath.Join(dir, "pec.yaml"))
			err := joinNode(t.Context(), tc.opts, new(bytes.Buffer))
			if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("join = %v (exit %d), want exit 2 with %q", err, exitCode(err), tc.want)
			}
			if before != nil {
				if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s left behind: %v", dir, err)
				}
			}
		})
	}
	// A list that cannot be read does not stop a join given an id.
	var out bytes.Buffer
	if err := joinNode(t.Context(), joinOptions{from: damaged, dir: filepath.Join(base, "given"), nodeID: 7}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "note: no list of the platform's nodes was readable here") {
		t.Errorf("join printed:\n%s", out.String())
	}
}

// TestJoinNodeIDs: ids come from the first node's list whichever node is
// joined, each once, the ports following them.
func TestJoinNodeIDs(t *testing.T) {
	from := firstNode(t)
	base := filepath.Dir(from)
	prev := from
	for i, id := range []int{1, 2, 5, 6} {
		dir := filepath.Join(base, "n"+strconv.Itoa(i))
		opts := joinOptions{from: prev, dir: dir, nodeID: -1}
		if id == 5 {
			opts.nodeID = 5
		}
		if err := joinNode(t.Context(), opts, new(bytes.Buffer)); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(filepath.Join(dir, "pec.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TSA.NodeID != id || cfg.Listen.TSA != "127.0.0.1:"+strconv.Itoa(8318+10*id) {
			t.Errorf("join %d: node_id %d, tsa %s; want %d", i, cfg.TSA.NodeID, cfg.Listen.TSA, id)
		}
		prev = dir
	}
	data, err := os.ReadFile(filepath.Join(from, nodesFile))
	if err != nil {
		t.Fatal(err)
	}
	nodes, list, err := parseNodeList(data)
	if err != nil || list != "" || len(nodes) != 5 {
		t.Fatalf("the first node's list: %v %q %v:\n%s", nodes, list, err, data)
	}
}

// TestYAMLEditor: values are replaced where the file has them, in every
// form they may take, missing entries added, a section removed, and the
// bytes around left as they were.
func TestYAMLEditor(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
		edit            func(*yamlEditor)
	}{
		{"plain with comment", "tsa:\n  node_id: 0     # unique\n", "tsa:\n  node_id: 3     # unique\n",
			func(e *yamlEditor) { e.set("tsa.node_id", "3") }},
		{"double quoted", "listen:\n  tsa: \"127.0.0.1:8318\" # x\n", "listen:\n  tsa: \"h:1\" # x\n",
			func(e *yamlEditor) { e.set("listen.tsa", `"h:1"`) }},
		{"double quoted, escapes", "a:\n  b: \"x\\\"y\" # \"c\"\n", "a:\n  b: 1 # \"c\"\n",
			func(e *yamlEditor) { e.set("a.b", "1") }},
		{"single quoted", "a:\n  b: 'it''s' # c\n", "a:\n  b: 2 # c\n",
			func(e *yamlEditor) { e.set("a.b", "2") }},
		{"empty value", "a:\n  b:\n  c: 1\n", "a:\n  b: 9\n  c: 1\n",
			func(e *yamlEditor) { e.set("a.b", "9") }},
		{"missing entry", "a:\n  # c\n  c: 1\n", "a:\n  # c\n  b: 9\n  c: 1\n",
			func(e *yamlEditor) { e.set("a.b", "9") }},
		{"missing section", "a: 1", "a: 1\n\nb:\n  c: 2\n",
			func(e *yamlEditor) { e.set("b.c", "2") }},
		{"non-ASCII before", "é: 1\na:\n  b: \"é\"\n", "é: 1\na:\n  b: x\n",
			func(e *yamlEditor) { e.set("a.b", "x") }},
		{"remove a middle section", "a: 1\n\n# about b\n# more\nb:\n  c: 2\n\n# about d\nd: 3\n", "a: 1\n\n# B\n\n# about d\nd: 3\n",
			func(e *yamlEditor) { e.remove("b", "# B\n") }},
		{"remove the last section", "a: 1\n# about b\nb:\n  c: 2\n", "a: 1\n# B\n\n",
			func(e *yamlEditor) { e.remove("b", "# B\n") }},
		{"top", "a: 1\n", "# t\na: 1\n", func(e *yamlEditor) { e.insertTop("# t\n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := parseNode([]byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			e := newYAMLEditor([]byte(tc.src), doc)
			tc.edit(e)
			got, err := e.apply()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, src, path string }{
		{"flow mapping", "a: {c: 1}\n", "a.b"},
		{"a mapping, not a value", "a:\n  b:\n    c: 1\n", "a.b"},
		{"a multi-line value", "a:\n  b: >\n    x\n", "a.b"},
		{"under a value", "a: 1\n", "a.b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := parseNode([]byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			e := newYAMLEditor([]byte(tc.src), doc)
			e.set(tc.path, "1")
			if got, err := e.apply(); err == nil {
				t.Errorf("set %s in %q = %q, want an error", tc.path, tc.src, got)
			}
		})
	}
}

// TestJoinEditsGeneratedConfig: on both variants of the pec.yaml that
// pec init writes, the edits of a join give a file that decodes strictly
// with the new values, and changes nothing else.
func TestJoinEditsGeneratedConfig(t *testing.T) {
	for _, p := range []configs.Params{
		{Dev: true, Module: softHSMModule, TokenLabel: "pec-dev", PINFile: "hsm/pin", SoftHSM2Conf: "hsm/softhsm2.conf", PolicyOID: devPolicyOID, DevCAURL: defaultCAURL},
		{Dev: true, KeyDir: "keys", PolicyOID: devPolicyOID},
	} {
		src, err := configs.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := joinEdits(src)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConfig(got)
		if err != nil {
			t.Fatalf("%v:\n%s", err, got)
		}
		if cfg.TSA.NodeID != 4 || cfg.Listen.TSA != "127.0.0.1:1" || cfg.DevCA.Configured() {
			t.Errorf("node_id %d, listen.tsa %s, devca %v", cfg.TSA.NodeID, cfg.Listen.TSA, cfg.DevCA.Configured())
		}
		orig, _ := parseConfig(src)
		orig.TSA.NodeID, orig.Listen.TSA, orig.DevCA = cfg.TSA.NodeID, cfg.Listen.TSA, cfg.DevCA
		if !equalYAML(t, orig, cfg) {
			t.Error("a join changed more than its fields")
		}
	}
}

// joinEdits makes the edits of a join that depend on nothing but the file.
func joinEdits(src []byte) ([]byte, error) {
	doc, err := parseNode(src)
	if err != nil {
		return nil, err
	}
	e := newYAMLEditor(src, doc)
	e.set("tsa.node_id", "4")
	e.set("listen.tsa", strconv.Quote("127.0.0.1:1"))
	e.remove("devca", "# none\n")
	e.insertTop("# joined\n")
	return e.apply()
}

func equalYAML(t testing.TB, a, b *File) bool {
	t.Helper()
	x, err1 := yaml.Marshal(a)
	y, err2 := yaml.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return bytes.Equal(x, y)
}

// FuzzJoinEdits: on any YAML mapping the edits of a join either fail with
// an error or give YAML that holds the new values.
func FuzzJoinEdits(f *testing.F) {
	for _, p := range []configs.Params{
		{Dev: true, Module: softHSMModule, TokenLabel: "pec-dev", PINFile: "hsm/pin", SoftHSM2Conf: "hsm/softhsm2.conf", PolicyOID: devPolicyOID, DevCAURL: defaultCAURL},
	} {
		src, err := configs.Render(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if len(src) > 1<<16 {
			return
		}
		if _, err := parseNode(src); err != nil {
			return
		}
		got, err := joinEdits(src)
		if err != nil {
			return
		}
		doc, err := parseNode(got)
		if err != nil {
			t.Fatalf("edited file does not parse: %v\n%s", err, got)
		}
		if v := scalarAt(doc, "tsa.node_id"); v != "4" {
			t.Fatalf("tsa.node_id = %q in\n%s", v, got)
		}
		if v := scalarAt(doc, "listen.tsa"); v != "127.0.0.1:1" {
			t.Fatalf("listen.tsa = %q in\n%s", v, got)
		}
	})
}

// FuzzNodeList: any list either is refused with an error or reads as
// distinct ids and absolute paths, and reads the same once written again.
func FuzzNodeList(f *testing.F) {
	f.Add([]byte("# nodes\n0 /a\n1 /b c\n"))
	f.Add([]byte("list /a/nodes\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, list, err := parseNodeList(data)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, n := range nodes {
			if seen[n.id] || n.id < 0 || n.id > 0xffff || !filepath.IsAbs(n.dir) {
				t.Fatalf("read %+v", nodes)
			}
			seen[n.id] = true
		}
		if list != "" {
			if len(nodes) > 0 || !filepath.IsAbs(list) {
				t.Fatalf("list %q with %v", list, nodes)
			}
			return
		}
		again := (&nodeList{nodes: nodes}).text()
		nodes2, _, err := parseNodeList(again)
		if err != nil || len(nodes2) != len(nodes) {
			t.Fatalf("written %q, read %v, %v", again, nodes2, err)
		}
		for i := range nodes {
			if nodes[i] != nodes2[i] {
				t.Fatalf("written %q, read %v, want %v", again, nodes2, nodes)
			}
		}
	})
}
