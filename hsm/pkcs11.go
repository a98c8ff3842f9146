package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/miekg/pkcs11"
)

// p11 is the part of the PKCS#11 binding that a key store calls. *pkcs11.Ctx
// implements it; tests wrap it to inject the faults SoftHSM2 cannot produce
// (a closed session, a device error, a removed token).
type p11 interface {
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error)
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error)
	SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error)
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
	CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
}

var _ p11 = (*pkcs11.Ctx)(nil)

// module is one PKCS#11 library, loaded and initialised once per process.
//
// PKCS#11 v2.40 section 5.4 leaves C_Finalize undefined while other threads
// are inside the library, so every call holds mu for reading and only
// C_Initialize / C_Finalize hold it for writing. Readers never wait for each
// other: the lock does not serialise signatures.
//
// Nobody waits on mu itself, since a sync.RWMutex makes new readers wait,
// without a context, behind a writer that waits for a reader stuck in a
// hung module. A writer announces itself with gate, then polls TryLock until
// the calls under way have drained, for as long as its context lets it;
// readers that find gate set wait for it to close, with their own context
// (rlock). A hung call thus blocks neither the others nor the recovery for
// longer than their contexts say.
type module struct {
	path string
	ctx  *pkcs11.Ctx

	mu     sync.RWMutex
	writer chan struct{}                 // one writer at a time, acquired with a context
	gate   atomic.Pointer[chan struct{}] // set while a writer drains or holds mu; closed when it is done

	gen         uint64 // guarded by mu; changes at each C_Initialize and C_Finalize: older handles are void
	initialized bool   // guarded by mu
	owner       bool   // guarded by mu; we called C_Initialize, so we may call C_Finalize
	conf        string // guarded by mu; SOFTHSM2_CONF when it was initialised

	refs  int        // guarded by modules.mu
	admin sync.Mutex // serialises InitToken: two could pick the same free slot
}

// rlock takes mu for reading, waiting with ctx for a writer to finish.
func (m *module) rlock(ctx context.Context) error {
	for {
		if g := m.gate.Load(); g != nil {
			select {
			case <-*g:
				continue
			case <-ctx.Done():
				return fmt.Errorf("hsm: wait for the PKCS#11 module's re-initialisation: %w", context.Cause(ctx))
			}
		}
		if m.mu.TryRLock() {
			return nil
		}
		// A writer took mu between the two loads of gate: it is set now.
		runtime.Gosched()
	}
}

func (m *module) runlock() { m.mu.RUnlock() }

// lock takes mu for writing once the calls under way have returned, giving
// up when ctx ends (a call that never returns: a hung module).
func (m *module) lock(ctx context.Context) error {
	select {
	case m.writer <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("hsm: wait to re-initialise the PKCS#11 module: %w", context.Cause(ctx))
	}
	g := make(chan struct{})
	m.gate.Store(&g)
	if m.mu.TryLock() {
		return nil
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !m.mu.TryLock() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			m.gate.Store(nil)
			close(g)
			<-m.writer
			return fmt.Errorf("hsm: PKCS#11 calls under way have not returned: %w", context.Cause(ctx))
		}
	}
	return nil
}

func (m *module) unlock() {
	m.mu.Unlock()
	close(*m.gate.Swap(nil))
	<-m.writer
}

// modules is the process-wide registry of loaded modules, by path.
var modules = struct {
	mu sync.Mutex
	m  map[string]*module
}{m: make(map[string]*module)}

// acquireModule returns the module at path, loading and initialising it if
// it is not in use. conf, if set, becomes SOFTHSM2_CONF before the
// initialisation: SoftHSM2 reads it there, and only there.
func acquireModule(ctx context.Context, path, conf string) (*module, error) {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	m := modules.m[path]
	if m == nil {
		if strings.ContainsRune(path, '/') {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("hsm: PKCS#11 module: %w (install it, SoftHSM2: apt-get install softhsm2, or correct hsm.module)", err)
			}
		}
		ctx := pkcs11.New(path)
		if ctx == nil {
			return nil, fmt.Errorf("hsm: PKCS#11 module %s: cannot be loaded (not a PKCS#11 library, or built for another architecture: check hsm.module)", path)
		}
		// The library stays loaded for the life of the process, even once
		// finalised: unloading and reloading a library that links OpenSSL
		// (SoftHSM2 does) is a known source of crashes at exit, and a later
		// Open would load it again anyway.
		m = &module{path: path, ctx: ctx, writer: make(chan struct{}, 1)}
		modules.m[path] = m
	}
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.unlock()
	if !m.initialized {
		if conf != "" {
			if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
				return nil, fmt.Errorf("hsm: softhsm2_conf: %w", err)
			}
		}
		if err := m.initialize(); err != nil {
			if conf != "" && errors.Is(err, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
				// SoftHSM2's answer to a configuration it cannot use.
				return nil, fmt.Errorf("%w (SoftHSM2 says so when %s, hsm.softhsm2_conf, cannot be read or names a directories.tokendir that is missing or unreadable)", err, conf)
			}
			return nil, err
		}
	} else if conf != "" && filepath.Clean(conf) != filepath.Clean(m.conf) {
		return nil, fmt.Errorf("hsm: softhsm2_conf: module %s is already initialised in this process with SOFTHSM2_CONF=%q; %q cannot take effect", path, m.conf, conf)
	}
	m.refs++
	return m, nil
}

// initialize calls C_Initialize. The caller holds m.mu for writing.
func (m *module) initialize() error {
	m.gen++
	err := m.ctx.Initialize()
	switch {
	case err == nil:
		m.owner = true
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
		// Another user of the library in this process (outside this
		// package) initialised it: share it, and leave C_Finalize to them.
		m.owner = false
	default:
		m.initialized = false
		return fmt.Errorf("hsm: initialise PKCS#11 module %s: %w", m.path, err)
	}
	m.initialized = true
	m.conf = os.Getenv("SOFTHSM2_CONF")
	return nil
}

// release drops one reference; the last one finalises the module. It waits
// for the calls under way, however long.
func (m *module) release() {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	_ = m.lock(context.Background())
	defer m.unlock()
	if m.initialized && m.owner {
		_ = m.ctx.Finalize() // nothing is left to save
	}
	m.initialized = false
	m.gen++
}

// reinitialize finalises and initialises the module again, unless someone
// did since generation seen: a recovery from CKR_DEVICE_ERROR, or from a
// token that SoftHSM2 (which reads its token directory in C_Initialize
// only) can see again only so. It waits, within ctx, for the calls under
// way. A module whose last initialisation failed is initialised whatever
// the generation. reinitialized tells whether this call did it.
func (m *module) reinitialize(ctx context.Context, seen uint64) (reinitialized bool, err error) {
	if err := m.lock(ctx); err != nil {
		return false, err
	}
	defer m.unlock()
	if m.gen != seen && m.initialized {
		return false, nil
	}
	if m.initialized && m.owner {
		_ = m.ctx.Finalize() // the module is in trouble: its answer tells nothing more
	}
	m.initialized = false
	return true, m.initialize()
}

// generation returns gen and whether the module is initialised, within ctx.
func (m *module) generation(ctx context.Context) (gen uint64, initialized bool, err error) {
	if err := m.rlock(ctx); err != nil {
		return 0, false, err
	}
	defer m.runlock()
	return m.gen, m.initialized, nil
}

// tokenSelector names the token a KeyStore works with.
type tokenSelector struct{ label, serial string }

func (s tokenSelector) String() string {
	switch {
	case s.label != "" && s.serial != "":
		return fmt.Sprintf("token %q (serial %s)", s.label, s.serial)
	case s.serial != "":
		return "token with serial " + s.serial
	}
	return fmt.Sprintf("token %q", s.label)
}

func (s tokenSelector) matches(ti pkcs11.TokenInfo) bool {
	return (s.label == "" || ti.Label == s.label) && (s.serial == "" || ti.SerialNumber == s.serial)
}

// findToken returns the slot holding the selected token. Called again after
// a recovery: slot IDs may change when a token is re-inserted or the module
// re-initialised.
func findToken(p p11, sel tokenSelector) (slot uint, serial string, err error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, "", fmt.Errorf("hsm: list slots: %w", err)
	}
	var found []uint
	var serials, seen []string
	for _, id := range slots {
		ti, err := p.GetTokenInfo(id)
		if err != nil {
			continue // a slot emptied meanwhile: not ours
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		seen = append(seen, fmt.Sprintf("%q (serial %s)", ti.Label, ti.SerialNumber))
		if sel.matches(ti) {
			found = append(found, id)
			serials = append(serials, ti.SerialNumber)
		}
	}
	switch len(found) {
	case 1:
		return found[0], serials[0], nil
	case 0:
		tokens := "none"
		if len(seen) > 0 {
			tokens = strings.Join(seen, ", ")
		}
		// What to check: the selector in pec.yaml, and for SoftHSM2 the
		// token directory its configuration names.
		return 0, "", fmt.Errorf("hsm: no %s (tokens present: %s): check hsm.token_label and hsm.token_serial; with SoftHSM2, the directories.tokendir of hsm.softhsm2_conf (softhsm2-util --show-slots lists the tokens it finds)", sel, tokens)
	}
	return 0, "", fmt.Errorf("hsm: %d tokens match %s (serials %s): select one with hsm.token_serial", len(found), sel, strings.Join(serials, ", "))
}

// login logs the user in. CKR_USER_ALREADY_LOGGED_IN is success: another
// session or KeyStore of this process did it, and the state is shared.
func login(p p11, sh pkcs11.SessionHandle, pin string) (already bool, err error) {
	err = p.Login(sh, pkcs11.CKU_USER, pin)
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return true, nil
	}
	return false, err
}

// loginError explains a failed login without the PIN, which the error of the
// binding never contains either.
func loginError(sel tokenSelector, err error) error {
	switch {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)):
		return fmt.Errorf("hsm: log in to %s: wrong PIN: %w (check the user PIN in hsm.pin_file or hsm.pin_env; each wrong try counts towards locking the token)", sel, err)
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LOCKED)):
		return fmt.Errorf("hsm: log in to %s: PIN locked: %w (the security officer must unlock it: softhsm2-util or the HSM vendor's tool)", sel, err)
	}
	return fmt.Errorf("hsm: log in to %s: %w", sel, err)
}

// InitToken initialises a new token in the first slot whose token is not
// initialised yet (SoftHSM2 always offers one), with the security officer PIN
// soPIN, then sets the user PIN. It returns the serial of the new token. A
// token with the same label must not exist already: a label selects one
// token.
func InitToken(module, label, soPIN, userPIN string) (serial string, err error) {
	if label == "" || len(label) > maxTokenLabel || !utf8.ValidString(label) {
		return "", fmt.Errorf("hsm: init token: label %q is not a PKCS#11 token label (UTF-8, 1 to %d bytes)", label, maxTokenLabel)
	}
	if soPIN == "" || userPIN == "" {
		return "", errors.New("hsm: init token: empty PIN")
	}
	m, err := acquireModule(context.Background(), module, "")
	if err != nil {
		return "", err
	}
	defer m.release()
	m.admin.Lock()
	defer m.admin.Unlock()
	if err := m.rlock(context.Background()); err != nil {
		return "", err
	}
	defer m.runlock()
	serial, err = initToken(m.ctx, label, soPIN, userPIN)
	if err != nil {
		return "", fmt.Errorf("hsm: init token %q: %w", label, err)
	}
	return serial, nil
}

func initToken(ctx *pkcs11.Ctx, label, soPIN, userPIN string) (string, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("list slots: %w", err)
	}
	free, haveFree := uint(0), false
	before := map[string]bool{}
	for _, id := range slots {
		ti, err := ctx.GetTokenInfo(id)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			if !haveFree {
				free, haveFree = id, true
			}
			continue
		}
		if ti.Label == label {
			return "", fmt.Errorf("a token with this label exists already (serial %s)", ti.SerialNumber)
		}
		before[ti.SerialNumber] = true
	}
	if !haveFree {
		return "", errors.New("no slot with an uninitialised token")
	}
	if err := ctx.InitToken(free, soPIN, label); err != nil {
		return "", err
	}
	// SoftHSM2 moves an initialised token to a slot of its own, named
	// after the serial, and offers a new free slot: look again.
	slots, err = ctx.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("list slots: %w", err)
	}
	for _, id := range slots {
		ti, err := ctx.GetTokenInfo(id)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 || ti.Label != label || before[ti.SerialNumber] {
			continue
		}
		return ti.SerialNumber, setUserPIN(ctx, id, soPIN, userPIN)
	}
	return "", errors.New("the new token is not in the slot list")
}

func setUserPIN(ctx *pkcs11.Ctx, slot uint, soPIN, userPIN string) error {
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	defer ctx.CloseSession(sh)
	if err := ctx.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("log in as security officer: %w", err)
	}
	defer ctx.Logout(sh)
	if err := ctx.InitPIN(sh, userPIN); err != nil {
		return fmt.Errorf("set the user PIN: %w", err)
	}
	return nil
}

// tokenStore is the KeyStore of a PKCS#11 token.
type tokenStore struct {
	mod  *module
	p    p11 // mod.ctx, or a fault-injecting wrapper in tests
	sel  tokenSelector
	pin  string
	log  *slog.Logger
	met  *metrics
	pool *pool
	wait time.Duration // Config.Wait: bound of a Sign or Decrypt, which has no context

	// repair serialises logins and the replacement of the token state; it
	// is never held by an operation, and acquired with a context. Lock
	// order: repair, then mod.mu.
	repair chan struct{}
	state  atomic.Pointer[tokenState]
	logins atomic.Uint64 // logins by relogin: callers that saw one fault log in once

	rec recoverer // token and module recoveries, and the outage they may end in

	keysMu sync.Mutex
	keys   map[string]*Key // by label: the handles they cache survive

	genMu sync.Mutex // GenerateKey: check-then-create of a label
	// wrote: this KeyStore made or destroyed a token object since the
	// module last read the token (see "Keys another process makes" in the
	// package doc).
	wrote  atomic.Bool
	closed atomic.Bool
	oaep   sync.Map // oaepParams → bool: whether the module does OAEP right with them
}

// tokenState is what a recovery of the token replaces at once. Sessions and
// key handles remember the epoch they belong to.
type tokenState struct {
	slot   uint
	serial string
	epoch  uint64
	modGen uint64               // module generation the sessions were opened in
	anchor pkcs11.SessionHandle // keeps the login state (see the package doc)
}

func openToken(ctx context.Context, cfg Config, log *slog.Logger, met *metrics, wrap func(p11) p11) (KeyStore, error) {
	pin, err := cfg.readPIN()
	if err != nil {
		return nil, err
	}
	mod, err := acquireModule(ctx, cfg.Module, cfg.SoftHSM2Conf)
	if err != nil {
		return nil, err
	}
	var p p11 = mod.ctx
	if wrap != nil {
		p = wrap(p)
	}
	size := cfg.Sessions
	if size == 0 {
		// A signature holds its OS thread in cgo for its whole length,
		// so more sessions than Ps keep the CPUs busy; and callers (HTTP
		// handlers) outnumber CPUs on small machines, where a floor of 8
		// measured 3 to 5% faster than 4 at 8 signing goroutines.
		size = max(8, 2*runtime.GOMAXPROCS(0))
	}
	wait := cfg.Wait
	if wait == 0 {
		wait = defaultWait
	}
	s := &tokenStore{
		mod:    mod,
		p:      p,
		sel:    tokenSelector{label: cfg.TokenLabel, serial: cfg.TokenSerial},
		pin:    pin,
		log:    log.With(tokenAttrs(cfg)...),
		met:    met,
		wait:   wait,
		repair: make(chan struct{}, 1),
		keys:   make(map[string]*Key),
	}
	s.pool = newPool(size)
	token := cfg.TokenLabel
	if token == "" {
		token = cfg.TokenSerial
	}
	s.rec.init(token, met)
	if err := mod.rlock(ctx); err != nil {
		mod.release()
		return nil, err
	}
	st, err := s.connect(0)
	mod.runlock()
	if err != nil {
		mod.release()
		return nil, err
	}
	s.state.Store(st)
	s.rec.opened()
	s.log.InfoContext(ctx, "hsm: token opened", "module", cfg.Module, "serial", st.serial, "slot", st.slot, "sessions", size)
	return s, nil
}

// defaultWait bounds a signature or decryption: its wait for a session, for
// a recovery under way, and for the module. crypto.Signer has no context.
const defaultWait = 10 * time.Second

// tokenAttrs are the log attributes that name the token, as configured.
func tokenAttrs(cfg Config) []any {
	var attrs []any
	if cfg.TokenLabel != "" {
		attrs = append(attrs, "token_label", cfg.TokenLabel)
	}
	if cfg.TokenSerial != "" {
		attrs = append(attrs, "token_serial", cfg.TokenSerial)
	}
	return attrs
}

// connect finds the token, opens the anchor session and logs in. The caller
// holds mod.mu for reading.
func (s *tokenStore) connect(epoch uint64) (*tokenState, error) {
	slot, serial, err := findToken(s.p, s.sel)
	if err != nil {
		return nil, err
	}
	anchor, err := s.p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, fmt.Errorf("hsm: open a session on %s: %w", s.sel, err)
	}
	if _, err := login(s.p, anchor, s.pin); err != nil {
		_ = s.p.CloseSession(anchor)
		return nil, loginError(s.sel, err)
	}
	return &tokenState{slot: slot, serial: serial, epoch: epoch, modGen: s.mod.gen, anchor: anchor}, nil
}

// lockRepair takes s.repair, waiting with ctx.
func (s *tokenStore) lockRepair(ctx context.Context) error {
	select {
	case s.repair <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hsm: wait for a recovery under way: %w", context.Cause(ctx))
	}
}

func (s *tokenStore) unlockRepair() { <-s.repair }

func (s *tokenStore) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.rec.stop()               // ends the retries, and waits for the recovery under way
	sessions := s.pool.drain() // waits for the operations under way
	// s.repair waits for a login under way, and any later one sees
	// closed: no anchor session opens after this one closes.
	_ = s.lockRepair(context.Background())
	defer s.unlockRepair()
	_ = s.mod.rlock(context.Background())
	st := s.state.Load()
	for _, sess := range sessions {
		if sess.open && sess.epoch == st.epoch && sess.modGen == s.mod.gen {
			_ = s.p.CloseSession(sess.h)
		}
	}
	// No C_Logout: the login state is shared with any other KeyStore of
	// this process on the token, and ends by itself with our last session.
	if st.modGen == s.mod.gen {
		_ = s.p.CloseSession(st.anchor)
	}
	s.mod.runlock()
	s.rec.closed()
	s.mod.release()
	return nil
}

func (s *tokenStore) Signer(ctx context.Context, label string) (crypto.Signer, error) {
	return s.key(ctx, label)
}

func (s *tokenStore) Decrypter(ctx context.Context, label string) (crypto.Decrypter, error) {
	k, err := s.key(ctx, label)
	if err != nil {
		return nil, err
	}
	if _, ok := k.pub.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("hsm: key %q is not an RSA key: it cannot decrypt", label)
	}
	return k, nil
}

// key returns the cached key labelled label, or finds it on the token.
// A key not found after this KeyStore wrote to the token is looked for
// once more after the module re-read the token (see "Keys another process
// makes" in the package doc).
func (s *tokenStore) key(ctx context.Context, label string) (*Key, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	s.keysMu.Lock()
	k := s.keys[label]
	s.keysMu.Unlock()
	if k != nil {
		return k, nil
	}
	k, err := s.find(ctx, label)
	if errors.Is(err, ErrKeyNotFound) && s.wrote.Swap(false) {
		if rerr := s.reread(ctx, label); rerr != nil {
			return nil, fmt.Errorf("hsm: key %q: not found, and the token could not be read again: %w", label, rerr)
		}
		k, err = s.find(ctx, label)
	}
	return k, err
}

// reread has the module read the token again (C_Finalize, C_Initialize:
// the only way SoftHSM2 rescans its token directory), as a module
// recovery does: the keys handed out find their objects again by
// themselves, the operations under way are retried.
func (s *tokenStore) reread(ctx context.Context, label string) error {
	s.log.InfoContext(ctx, "hsm: key not found since this process wrote to the token: the module reads the token again, for a key another process may have made meanwhile", "key_label", label)
	_, _, err := s.reset(ctx, faultModule, view{epoch: s.state.Load().epoch, modGen: forceReinit})
	return err
}

// find looks for the key labelled label on the token, and caches it.
func (s *tokenStore) find(ctx context.Context, label string) (*Key, error) {
	var pub crypto.PublicKey
	var id []byte
	var h *keyHandle
	err := s.do(ctx, nil, func(sh pkcs11.SessionHandle, st *tokenState) error {
		priv, pubObj, err := findKeyPair(s.p, sh, label, nil)
		if errors.Is(err, ErrKeyNotFound) {
			// A token that is going (SoftHSM2 with its token directory
			// moved away) finds nothing: ask the token whether it is
			// still there before saying the key does not exist.
			if _, terr := s.p.GetTokenInfo(st.slot); classify(terr) != faultNone {
				return fmt.Errorf("hsm: read the token's information: %w", terr)
			}
		}
		if err != nil {
			return err
		}
		id, err = attribute(s.p, sh, priv, pkcs11.CKA_ID)
		if err != nil {
			return err
		}
		pub, err = publicKey(s.p, sh, priv, pubObj)
		h = &keyHandle{epoch: st.epoch, obj: priv}
		return err
	})
	if errors.Is(err, ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrKeyNotFound, label)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: key %q: %w", label, err)
	}
	return s.remember(newKey(s, label, id, pub, h)), nil
}

// remember caches k, or returns the key cached meanwhile by another caller.
func (s *tokenStore) remember(k *Key) *Key {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if old := s.keys[k.label]; old != nil {
		return old
	}
	s.keys[k.label] = k
	return k
}

func (s *tokenStore) GenerateKey(ctx context.Context, label string, kt KeyType) (crypto.Signer, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if label == "" || !utf8.ValidString(label) {
		return nil, fmt.Errorf("hsm: generate key: label %q is not a UTF-8 string", label)
	}
	mech, pubT, privT, err := keyTemplates(kt)
	if err != nil {
		return nil, err
	}
	// A random CKA_ID ties the two halves together (PKCS#11 v2.40 section
	// 4.7: "intended as a means of distinguishing multiple public-key/
	// private-key pairs held by the same subject").
	id := make([]byte, 16)
	rand.Read(id)
	common := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	pubT, privT = append(pubT, common...), append(privT, common...)

	s.genMu.Lock()
	defer s.genMu.Unlock()
	var pub crypto.PublicKey
	var h *keyHandle
	err = s.do(ctx, nil, func(sh pkcs11.SessionHandle, st *tokenState) error {
		switch priv, _, err := findKeyPair(s.p, sh, label, nil); {
		case err == nil:
			// A retry after a fault may find the key the first attempt
			// made: ours if it has our CKA_ID.
			have, aerr := attribute(s.p, sh, priv, pkcs11.CKA_ID)
			if aerr != nil {
				return aerr
			}
			if !slices.Equal(have, id) {
				return ErrKeyExists
			}
		case !errors.Is(err, ErrKeyNotFound):
			return err
		default:
			// Token objects need a read/write session
			// (CKR_SESSION_READ_ONLY otherwise); the pool's sessions stay
			// read-only.
			rw, err := s.p.OpenSession(st.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
			if err != nil {
				return err
			}
			s.wrote.Store(true) // before and after: a lookup meanwhile may take it
			_, _, err = s.p.GenerateKeyPair(rw, mech, pubT, privT)
			s.wrote.Store(true)
			_ = s.p.CloseSession(rw)
			if err != nil {
				return err
			}
		}
		priv, pubObj, err := findKeyPair(s.p, sh, label, id)
		if err != nil {
			return err
		}
		pub, err = publicKey(s.p, sh, priv, pubObj)
		h = &keyHandle{epoch: st.epoch, obj: priv}
		return err
	})
	if errors.Is(err, ErrKeyExists) {
		return nil, fmt.Errorf("%w: %q", ErrKeyExists, label)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q: %w", kt, label, err)
	}
	k := newKey(s, label, id, pub, h)
	s.keysMu.Lock()
	s.keys[label] = k // replaces nothing: the label was free
	s.keysMu.Unlock()
	s.log.Info("hsm: key generated", "key_label", label, "key_type", kt.String())
	return k, nil
}

// Curve OIDs of RFC 5480 section 2.1.1.1, the DER CKA_EC_PARAMS value.
var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// keyTemplates returns the mechanism and the attribute templates (without
// label and ID) that generate a key pair of type kt.
func keyTemplates(kt KeyType) (mech []*pkcs11.Mechanism, pub, priv []*pkcs11.Attribute, err error) {
	// RSA keys both sign and decrypt: KeyStore.Decrypter serves the same
	// labels as Signer (the key of an encryption certificate). EC keys only
	// sign. Every usage is spelled out, since module defaults differ
	// (SoftHSM2 allows decrypt and unwrap unless told otherwise).
	isRSA := kt == RSA2048 || kt == RSA3072
	// The private half can never be read out (sensitive, not extractable).
	priv = []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN_RECOVER, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, isRSA),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
	}
	pub = []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY_RECOVER, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, isRSA),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
	}
	switch kt {
	case RSA2048, RSA3072:
		bits := 2048
		if kt == RSA3072 {
			bits = 3072
		}
		mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA))
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	case ECP256, ECP384:
		oid := oidP256
		if kt == ECP384 {
			oid = oidP384
		}
		params, _ := asn1.Marshal(oid)
		mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC))
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params))
	default:
		return nil, nil, nil, fmt.Errorf("hsm: generate key: unknown key type %v", kt)
	}
	return mech, pub, priv, nil
}

// findKeyPair finds the private key labelled label (and with CKA_ID id, if
// id is not empty), and its public key object if there is one (0 if not).
func findKeyPair(p p11, sh pkcs11.SessionHandle, label string, id []byte) (priv, pub pkcs11.ObjectHandle, err error) {
	priv, err = findPrivateKey(p, sh, label, id)
	if err != nil {
		return 0, 0, err
	}
	if len(id) == 0 {
		if id, err = attribute(p, sh, priv, pkcs11.CKA_ID); err != nil {
			return 0, 0, err
		}
	}
	// The public half shares the CKA_ID; tools differ on its label.
	t := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY)}
	if len(id) > 0 {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	} else {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	found, err := findObjects(p, sh, t)
	if err != nil {
		return 0, 0, err
	}
	if len(found) == 1 {
		pub = found[0]
	}
	return priv, pub, nil
}

// findPrivateKey finds the one private key labelled label (and with CKA_ID
// id, if id is not empty).
func findPrivateKey(p p11, sh pkcs11.SessionHandle, label string, id []byte) (pkcs11.ObjectHandle, error) {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		// Token objects only: a key's session copy (see "Signing from a
		// session copy") has its label and CKA_ID, and outlives neither
		// its session nor, for long, the token object.
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}
	if len(id) > 0 {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	found, err := findObjects(p, sh, t)
	switch {
	case err != nil:
		return 0, err
	case len(found) == 0:
		return 0, ErrKeyNotFound
	case len(found) > 1:
		return 0, errors.New("several private keys have this label")
	}
	return found[0], nil
}

// findObjects returns up to 2 objects matching t: enough to tell one from
// several.
func findObjects(p p11, sh pkcs11.SessionHandle, t []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(sh, t); err != nil {
		return nil, err
	}
	found, _, err := p.FindObjects(sh, 2)
	if ferr := p.FindObjectsFinal(sh); err == nil {
		err = ferr
	}
	return found, err
}

func attribute(p p11, sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, typ uint) ([]byte, error) {
	attrs, err := p.GetAttributeValue(sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if err != nil {
		return nil, err
	}
	return attrs[0].Value, nil
}

// publicKey reads the public key from the public-key object, or for RSA from
// the private-key object itself (its modulus and public exponent are never
// sensitive) when the token holds no public-key object.
func publicKey(p p11, sh pkcs11.SessionHandle, priv, pub pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	kt, err := attribute(p, sh, priv, pkcs11.CKA_KEY_TYPE)
	if err != nil {
		return nil, err
	}
	switch ulong(kt) {
	case pkcs11.CKK_RSA:
		o := pub
		if o == 0 {
			o = priv
		}
		attrs, err := p.GetAttributeValue(sh, o, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, errors.New("RSA public exponent out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}, nil
	case pkcs11.CKK_EC:
		if pub == 0 {
			return nil, errors.New("no public key object for this EC key")
		}
		attrs, err := p.GetAttributeValue(sh, pub, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
		})
		if err != nil {
			return nil, err
		}
		return ecPublicKey(attrs[0].Value, attrs[1].Value)
	}
	return nil, fmt.Errorf("unsupported key type 0x%x", ulong(kt))
}

// ecPublicKey decodes CKA_EC_PARAMS (a named curve) and CKA_EC_POINT: per
// PKCS#11 Current Mechanisms v2.40 section 2.3.3 a DER OCTET STRING wrapping
// the uncompressed point of SEC 1 section 2.3.3; some modules omit the
// wrapping.
func ecPublicKey(params, point []byte) (*ecdsa.PublicKey, error) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err != nil || len(rest) > 0 {
		return nil, errors.New("CKA_EC_PARAMS is not a named curve")
	}
	var curve elliptic.Curve
	switch {
	case oid.Equal(oidP256):
		curve = elliptic.P256()
	case oid.Equal(oidP384):
		curve = elliptic.P384()
	case oid.Equal(oidP521):
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported curve %v", oid)
	}
	var raw []byte
	if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) > 0 {
		raw = point
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
	if err != nil {
		return nil, fmt.Errorf("CKA_EC_POINT: %w", err)
	}
	return pub, nil
}

// ulong decodes a CK_ULONG attribute value: the C type, in native byte order.
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0) // matches no CKK_ constant
}
