package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"pec/internal/yamlpath"
)

// ConfigError is every fault of a configuration file, one per line, each as
// "pec.yaml:LINE: path: message" (no LINE when the fault has no place in
// the file, such as a required field of the top level left out).
type ConfigError struct {
	File   string // as the operator named it
	Faults []ConfigFault
}

// ConfigFault is one fault of a configuration file.
type ConfigFault struct {
	Line    int    // 1-based; 0: no place in the file
	Column  int    // 1-based; 0: not known
	Path    string // "tsa.accuracy"; "" for the file as a whole
	Message string
	covers  []string // paths whose other faults this one explains
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Faults))
	for i, f := range e.Faults {
		lines[i] = e.File + f.String()
	}
	return strings.Join(lines, "\n")
}

// String is the fault after the file name: ":12: listen.max_in_flight: ...".
func (f ConfigFault) String() string {
	var b strings.Builder
	if f.Line > 0 {
		fmt.Fprintf(&b, ":%d", f.Line)
	}
	b.WriteString(": ")
	if f.Path != "" {
		b.WriteString(f.Path + ": ")
	}
	b.WriteString(f.Message)
	return b.String()
}

// decodeConfig reads data as pec.yaml: the YAML document, checked against
// File (unknown fields with a suggestion, wrong types, keys set twice),
// then decoded. A syntax error, an empty file or a second document ends
// it with a single fault (fatal); the other faults come back all together,
// with the configuration as far as it decoded.
func decodeConfig(data []byte) (cfg *File, doc *yaml.Node, faults []ConfigFault, fatal bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc = new(yaml.Node)
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, []ConfigFault{{Message: "empty: no configuration in the file (pec init --dir DIR writes a commented one)"}}, true
		}
		return nil, nil, []ConfigFault{syntaxFault(data, err)}, true
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, nil, []ConfigFault{syntaxFault(data, err)}, true
	default:
		return nil, nil, []ConfigFault{{Line: extra.Line, Message: "a second YAML document (after ---): pec.yaml holds one"}}, true
	}
	checked := yamlpath.Check(doc, reflect.TypeFor[File]())
	for _, f := range checked {
		cf := ConfigFault{Line: f.Line, Column: f.Column, Path: f.Path, Message: f.Message, covers: []string{f.Entry}}
		if f.Suggestion != "" {
			// A misspelt field: the "required" faults of the field meant,
			// when the file does not have it, are this one.
			parent, _, _ := cutLastStep(f.Path)
			meant := joinPath(parent, f.Suggestion)
			if _, _, there := yamlpath.Locate(doc, meant); !there {
				cf.covers = append(cf.covers, meant)
			}
		}
		faults = append(faults, cf)
	}
	cfg = new(File)
	if len(checked) > 0 {
		// The rest of the file, without the faulty entries, is still
		// checked by its meaning.
		yamlpath.Drop(doc, checked)
		_ = doc.Decode(cfg)
		return cfg, doc, faults, false
	}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(cfg); err != nil {
		// What the decoder refuses and the check missed still counts.
		if te, ok := errors.AsType[*yaml.TypeError](err); ok {
			for _, msg := range te.Errors {
				faults = append(faults, lineFault(msg))
			}
		} else {
			faults = append(faults, lineFault(strings.TrimPrefix(err.Error(), "yaml: ")))
		}
		// Their paths are not known: nothing after them is trusted.
		return cfg, doc, faults, true
	}
	return cfg, doc, faults, false
}

var (
	yamlLine      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownAnchor = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
)

// syntaxFault turns the parser's "yaml: line 3: mapping values are not
// allowed in this context" into a fault at line 3.
func syntaxFault(data []byte, err error) ConfigFault {
	f := lineFault(err.Error())
	if isParserProblem(f.Message) {
		f.Line++
	}
	if m := unknownAnchor.FindStringSubmatch(f.Message); m != nil && f.Line == 0 {
		// The parser does not say where: the first use of the alias.
		use := regexp.MustCompile(`\*` + regexp.QuoteMeta(m[1]) + `(?:[\s,\]}]|$)`)
		if loc := use.FindIndex(data); loc != nil {
			f.Line = 1 + bytes.Count(data[:loc[0]], []byte("\n"))
		}
	}
	if n := countLines(data); f.Line > n {
		f.Line = n // the end of the stream, which the scanner puts on a line of its own
	}
	f.Message = "YAML syntax: " + f.Message
	return f
}

// countLines counts the lines of data as YAML breaks them: at \r\n, \r,
// \n, and (YAML 1.1, which the parser follows) NEL, LS and PS.
func countLines(data []byte) int {
	n := 0
	text := string(data)
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch r {
		case '\r':
			if strings.HasPrefix(text[i+1:], "\n") {
				size++
			}
			n++
		case '\n', '\u0085', '\u2028', '\u2029':
			n++
		}
		i += size
	}
	if len(text) > 0 && !strings.HasSuffix(text, "\n") && !strings.HasSuffix(text, "\r") {
		n++ // a last line without its break
	}
	return max(n, 1)
}

func lineFault(msg string) ConfigFault {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return ConfigFault{Line: line, Message: m[2]}
	}
	return ConfigFault{Message: strings.TrimPrefix(msg, "yaml: ")}
}

// parserProblems are the syntax errors of yaml.v3's parser (parserc.go),
// as opposed to its scanner's: it reports their line 0-based (the
// scanner's are 1-based), and leaves out a line 0.
var parserProblems = []string{"did not find expected ", "found duplicate %TAG directive", "found duplicate %YAML directive", "found incompatible YAML document", "found undefined tag handle"}

func isParserProblem(msg string) bool {
	return slices.ContainsFunc(parserProblems, func(p string) bool { return strings.HasPrefix(msg, p) })
}

// placeFaults gives each fault of err (one per line, "path: message", as
// the sections' Validate write them) the line of the node its path names:
// the field itself, or the section it is missing from. Faults that an
// earlier fault explains (a field of the wrong type also fails its
// Validate) are left out.
func placeFaults(doc *yaml.Node, err error, earlier []ConfigFault) []ConfigFault {
	if err == nil {
		return nil
	}
	var out []ConfigFault
	for msg := range strings.SplitSeq(err.Error(), "\n") {
		if msg == "" {
			continue
		}
		f := ConfigFault{Message: msg}
		if p, rest, ok := strings.Cut(msg, ": "); ok {
			if _, perr := yamlpath.Parse(p); perr == nil {
				f.Path, f.Message = p, rest
				f.Line, f.Column, _ = yamlpath.Locate(doc, p)
			}
		}
		if !covered(f.Path, earlier) {
			out = append(out, f)
		}
	}
	return out
}

// covered reports whether a fault of earlier explains a fault at path: at
// the same path or inside it.
func covered(path string, earlier []ConfigFault) bool {
	if path == "" {
		return false
	}
	for _, e := range earlier {
		for _, c := range e.covers {
			if c == "" || path == c || strings.HasPrefix(path, c+".") || strings.HasPrefix(path, c+"[") {
				return true
			}
		}
	}
	return false
}

func cutLastStep(path string) (parent, last string, ok bool) {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return "", path, true
	}
	return path[:i], strings.TrimPrefix(path[i:], "."), true
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// A file the configuration names, to be checked before anything is opened.
type namedFile struct {
	path  string // in pec.yaml: "tsa.cert_file"
	file  string // resolved
	kind  fileKind
	hint  string // what to do when it is missing
	dirOK bool   // a directory is as good as a file (certificates, CRLs)
}

type fileKind int

const (
	mustExist   fileKind = iota // read at start: it must be there
	mayCreate                   // created at the first start when missing
	mustBeDir                   // an existing directory
	mayCreateIn                 // a directory created when missing
)

// namedFiles lists the files and directories that f names and a node reads
// or writes, with what to do when one is missing.
func (f *File) namedFiles() []namedFile {
	var out []namedFile
	add := func(path, file string, kind fileKind, hint string) {
		if file != "" {
			out = append(out, namedFile{path: path, file: file, kind: kind, hint: hint})
		}
	}
	cert := func(path, file string) { add(path, file, mustExist, "") }
	// certvalidation reads files or directories of them.
	certs := func(path, file string) {
		if file != "" {
			out = append(out, namedFile{path: path, file: file, kind: mustExist, dirOK: true})
		}
	}
	add("data_dir", f.DataDir, mayCreateIn, "")
	if f.HSM.Module != "" {
		if strings.Contains(f.HSM.Module, "/") { // else the loader's search path
			add("hsm.module", f.HSM.Module, mustExist, "install the PKCS#11 module (SoftHSM2: apt-get install softhsm2) or correct the path")
		}
		add("hsm.pin_file", f.HSM.PINFile, mustExist, "write the token's user PIN in it, mode 0600, or give hsm.pin_env; pec init --dir DIR makes one for a development token")
		add("hsm.softhsm2_conf", f.HSM.SoftHSM2Conf, mustExist, "the SoftHSM2 configuration naming the token directory; pec init --dir DIR writes one")
	} else {
		add("hsm.key_dir", f.HSM.KeyDir, mustBeDir, "the directory of the software keys, one LABEL.key file each; pec init --software-keys --dir DIR makes one")
	}
	if f.Listen.API != "" || f.TLS.TSATLS {
		cert("tls.cert_file", f.TLS.CertFile)
	}
	cert("tls.client_roots", f.TLS.ClientRoots)
	cert("tsa.cert_file", f.TSA.CertFile)
	add("tsa.serial_file", f.TSA.SerialFile, mayCreate, "")
	if !f.Proof.Configured() {
		add("tsa.journal_file", f.TSA.JournalFile, mayCreate, "")
	}
	if f.Proof.Configured() {
		if f.Proof.PostgresURLEnv == "" {
			add("proof.file", f.Proof.File, mayCreate, "")
		}
		cert("proof.cert_file", f.Proof.CertFile)
		add("proof.checkpoint_file", f.Proof.CheckpointFile, mayCreate, "")
	}
	for i, p := range f.Signing.Profiles {
		cert(fmt.Sprintf("signing.profiles[%d].cert_file", i), p.CertFile)
	}
	for i, a := range f.Signing.TrustAnchors {
		cert(fmt.Sprintf("signing.trust_anchors[%d]", i), a)
	}
	names := make([]string, 0, len(f.CertValidation.Purposes))
	for name := range f.CertValidation.Purposes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for i, r := range f.CertValidation.Purposes[name].Roots {
			certs(fmt.Sprintf("certvalidation.purposes.%s.roots[%d]", name, i), r)
		}
	}
	for i, c := range f.CertValidation.Intermediates {
		certs(fmt.Sprintf("certvalidation.intermediates[%d]", i), c)
	}
	for i, c := range f.CertValidation.CRLs {
		certs(fmt.Sprintf("certvalidation.crls[%d]", i), c)
	}
	for i, r := range f.CertValidation.Relax {
		for j, a := range r.Anchors {
			certs(fmt.Sprintf("certvalidation.relax[%d].anchors[%d]", i, j), a)
		}
	}
	for i, r := range f.Exchange.WebhookRoots {
		cert(fmt.Sprintf("exchange.webhook_roots[%d]", i), r)
	}
	if f.DevCA.Configured() {
		cert("devca.cert_file", f.DevCA.CertFile)
		add("devca.state_file", f.DevCA.StateFile, mayCreate, "")
	}
	add("directory.file", f.Directory.File, mayCreate, "")
	for i, p := range f.Directory.Partners {
		cert(fmt.Sprintf("directory.partners[%d].encryption_cert_file", i), p.EncryptionCertFile)
		for j, c := range p.Certificates {
			cert(fmt.Sprintf("directory.partners[%d].certificates[%d].file", i, j), c.File)
		}
	}
	return out
}

// checkFiles finds the files that f names and cannot be used: missing,
// unreadable, a directory for a file, or where a file cannot be created.
// Messages are "path: FILE: what (what to do)".
func (f *File) checkFiles() error {
	var errs []error
	dataDirOK := true
	for _, nf := range f.namedFiles() {
		if !dataDirOK && nf.kind == mayCreate && strings.HasPrefix(nf.file, f.DataDir+string(filepath.Separator)) {
			continue // the data_dir fault says it already
		}
		problem, missing := nf.check()
		if nf.path == "data_dir" {
			dataDirOK = problem == ""
		}
		if problem != "" {
			msg := fmt.Sprintf("%s: %s: %s", nf.path, nf.file, problem)
			if nf.hint != "" && missing {
				msg += " (" + nf.hint + ")"
			}
			errs = append(errs, errors.New(msg))
		}
	}
	return errors.Join(errs...)
}

// access(2) modes.
const (
	xOK = 1
	wOK = 2
	rOK = 4
)

// check returns what is wrong with the file, if anything, and whether it is
// missing.
func (nf namedFile) check() (problem string, missing bool) {
	unreadable := fmt.Sprintf("not readable by this user (uid %d)", os.Getuid())
	unwritable := fmt.Sprintf("not writable by this user (uid %d)", os.Getuid())
	fi, err := os.Stat(nf.file)
	if errors.Is(err, syscall.ENOTDIR) {
		err = fs.ErrNotExist // a file where a directory of the path should be
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && (nf.kind == mayCreate || nf.kind == mayCreateIn):
		return creatable(filepath.Dir(nf.file)), false
	case errors.Is(err, fs.ErrNotExist):
		return "no such file or directory", true
	case errors.Is(err, fs.ErrPermission):
		return unreadable, false
	case err != nil:
		return err.Error(), false
	}
	switch nf.kind {
	case mustExist:
		if fi.IsDir() && !nf.dirOK {
			return "a directory, not a file", false
		}
		f, err := os.Open(nf.file)
		if errors.Is(err, fs.ErrPermission) {
			return unreadable, false
		} else if err != nil {
			return err.Error(), false
		}
		f.Close()
	case mayCreate:
		if fi.IsDir() {
			return "a directory, not a file", false
		}
		if syscall.Access(nf.file, rOK|wOK) != nil {
			return unwritable, false
		}
	case mustBeDir, mayCreateIn:
		if !fi.IsDir() {
			return "not a directory", false
		}
		if syscall.Access(nf.file, rOK|wOK|xOK) != nil {
			return unwritable, false
		}
	}
	return "", false
}

// creatable checks that a file can be made in dir: the nearest existing
// ancestor (the missing ones are created) is a writable directory.
func creatable(dir string) string {
	for {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Sprintf("cannot be created: %s is not a directory", dir)
		case err == nil:
			if syscall.Access(dir, wOK|xOK) != nil {
				return fmt.Sprintf("cannot be created: %s is not writable by this user (uid %d)", dir, os.Getuid())
			}
			return ""
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return "cannot be created: " + err.Error()
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}
