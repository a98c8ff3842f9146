package hsm

import (
	"context"
	"crypto"
	"errors"
	"sync"

	"github.com/miekg/pkcs11"
)

// Faults injects into one KeyStore the PKCS#11 faults SoftHSM2 cannot
// produce: a closed session, a device error, a removed token. The calls that
// do not fail reach the real module.
type Faults struct {
	mu       sync.Mutex
	rules    []faultRule
	absent   bool
	holds    map[string]*hold
	real     p11                           // the module, behind the injector
	sessions map[pkcs11.SessionHandle]bool // open, as the KeyStore sees them
}

type faultRule struct {
	method string
	n      int // calls of method to let through first, plus one
	rv     uint
}

type hold struct {
	entered chan struct{}
	release chan struct{}
}

// FailCall makes the nth call of method from now on (1: the next one) fail
// with rv. Method is the name of a *pkcs11.Ctx method: "Sign", "SignInit",
// "OpenSession", ...
func (f *Faults) FailCall(method string, n int, rv uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, faultRule{method: method, n: n, rv: rv})
}

// SetTokenAbsent removes (true) or re-inserts (false) the token. Removing
// it closes, for real, every session the KeyStore had open, which ends its
// login as a pulled token would (PKCS#11 v2.40 section 5.6); while it is
// absent every call about it fails with CKR_TOKEN_NOT_PRESENT and no slot
// shows it.
func (f *Faults) SetTokenAbsent(absent bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.absent = absent
	if absent {
		for sh := range f.sessions {
			f.real.CloseSession(sh)
		}
		clear(f.sessions)
	}
}

// Hold makes the next call of method wait until release is called; entered
// is closed once the call is waiting.
func (f *Faults) Hold(method string) (entered <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holds == nil {
		f.holds = make(map[string]*hold)
	}
	h := &hold{entered: make(chan struct{}), release: make(chan struct{})}
	f.holds[method] = h
	return h.entered, sync.OnceFunc(func() { close(h.release) })
}

func (f *Faults) check(method string) error {
	f.mu.Lock()
	h := f.holds[method]
	delete(f.holds, method)
	var err error
	if f.absent && method != "GetSlotList" {
		err = pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT)
	}
	for i := 0; i < len(f.rules); i++ {
		r := &f.rules[i]
		if r.method != method {
			continue
		}
		if r.n--; r.n == 0 {
			if err == nil {
				err = pkcs11.Error(r.rv)
			}
			f.rules = append(f.rules[:i], f.rules[i+1:]...)
			i--
		}
	}
	f.mu.Unlock()
	if h != nil {
		close(h.entered)
		<-h.release
	}
	return err
}

// OpenWithFaults is Open with faults injected between the KeyStore and the
// module.
func OpenWithFaults(ctx context.Context, cfg Config, opts Options, f *Faults) (KeyStore, error) {
	return open(ctx, cfg, opts, func(p p11) p11 {
		f.mu.Lock()
		f.real, f.sessions = p, make(map[pkcs11.SessionHandle]bool)
		f.mu.Unlock()
		return &faultyP11{p11: p, f: f}
	})
}

// ModuleGeneration counts the initialisations and finalisations of the
// module at path in this process: it changes when a recovery re-initialises
// the module.
func ModuleGeneration(path string) uint64 {
	modules.mu.Lock()
	m := modules.m[path]
	modules.mu.Unlock()
	if m == nil {
		return 0
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.gen
}

type faultyP11 struct {
	p11
	f *Faults
}

func (c *faultyP11) GetSlotList(present bool) ([]uint, error) {
	if err := c.f.check("GetSlotList"); err != nil {
		return nil, err
	}
	return c.p11.GetSlotList(present)
}

func (c *faultyP11) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	if err := c.f.check("GetTokenInfo"); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	return c.p11.GetTokenInfo(slot)
}

func (c *faultyP11) OpenSession(slot, flags uint) (pkcs11.SessionHandle, error) {
	if err := c.f.check("OpenSession"); err != nil {
		return 0, err
	}
	sh, err := c.p11.OpenSession(slot, flags)
	if err == nil {
		c.f.mu.Lock()
		c.f.sessions[sh] = true
		c.f.mu.Unlock()
	}
	return sh, err
}

func (c *faultyP11) CloseSession(sh pkcs11.SessionHandle) error {
	if err := c.f.check("CloseSession"); err != nil {
		return err
	}
	c.f.mu.Lock()
	delete(c.f.sessions, sh)
	c.f.mu.Unlock()
	return c.p11.CloseSession(sh)
}

func (c *faultyP11) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	if err := c.f.check("GetSessionInfo"); err != nil {
		return pkcs11.SessionInfo{}, err
	}
	return c.p11.GetSessionInfo(sh)
}

func (c *faultyP11) Login(sh pkcs11.SessionHandle, userType uint, pin string) error {
	if err := c.f.check("Login"); err != nil {
		return err
	}
	return c.p11.Login(sh, userType, pin)
}

func (c *faultyP11) FindObjectsInit(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) error {
	if err := c.f.check("FindObjectsInit"); err != nil {
		return err
	}
	return c.p11.FindObjectsInit(sh, t)
}

func (c *faultyP11) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	if err := c.f.check("FindObjects"); err != nil {
		return nil, false, err
	}
	return c.p11.FindObjects(sh, max)
}

func (c *faultyP11) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	if err := c.f.check("FindObjectsFinal"); err != nil {
		return err
	}
	return c.p11.FindObjectsFinal(sh)
}

func (c *faultyP11) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if err := c.f.check("GetAttributeValue"); err != nil {
		return nil, err
	}
	return c.p11.GetAttributeValue(sh, o, a)
}

func (c *faultyP11) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, pub, priv []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if err := c.f.check("GenerateKeyPair"); err != nil {
		return 0, 0, err
	}
	return c.p11.GenerateKeyPair(sh, m, pub, priv)
}

func (c *faultyP11) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := c.f.check("SignInit"); err != nil {
		return err
	}
	return c.p11.SignInit(sh, m, o)
}

func (c *faultyP11) Sign(sh pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	if err := c.f.check("Sign"); err != nil {
		return nil, err
	}
	return c.p11.Sign(sh, msg)
}

func (c *faultyP11) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := c.f.check("DecryptInit"); err != nil {
		return err
	}
	return c.p11.DecryptInit(sh, m, o)
}

func (c *faultyP11) Decrypt(sh pkcs11.SessionHandle, in []byte) ([]byte, error) {
	if err := c.f.check("Decrypt"); err != nil {
		return nil, err
	}
	return c.p11.Decrypt(sh, in)
}

func (c *faultyP11) DestroyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle) error {
	if err := c.f.check("DestroyObject"); err != nil {
		return err
	}
	return c.p11.DestroyObject(sh, o)
}

// KeyCheckEvery is how long a key signs from its session copy at most
// before its token object signs again.
const KeyCheckEvery = keyCheckEvery

// SessionCopy reads, through a pooled session, the attributes
// CKA_TOKEN, CKA_SENSITIVE, CKA_EXTRACTABLE and CKA_LABEL of the session
// copy of a PKCS#11 key: ok false when it has none.
func SessionCopy(ctx context.Context, signer crypto.Signer) (attrs [][]byte, ok bool, err error) {
	k, isKey := signer.(*Key)
	if !isKey {
		return nil, false, errors.New("not a PKCS#11 key")
	}
	h := k.h.Load()
	if h == nil || h.copy == 0 {
		return nil, false, nil
	}
	err = k.s.do(ctx, nil, func(sh pkcs11.SessionHandle, _ *tokenState) error {
		got, err := k.s.p.GetAttributeValue(sh, h.copy, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		})
		for _, a := range got {
			attrs = append(attrs, a.Value)
		}
		return err
	})
	return attrs, true, err
}

// CopyHandle is the handle of a key's session copy (0: none).
func CopyHandle(signer crypto.Signer) uint {
	if k, ok := signer.(*Key); ok {
		if h := k.h.Load(); h != nil {
			return uint(h.copy)
		}
	}
	return 0
}

// ObjectExists tells whether the object handle names an object, through a
// pooled session of the store.
func ObjectExists(ctx context.Context, ks KeyStore, obj uint) (bool, error) {
	s, ok := ks.(*tokenStore)
	if !ok {
		return false, errors.New("not a PKCS#11 key store")
	}
	exists := false
	err := s.do(ctx, nil, func(sh pkcs11.SessionHandle, _ *tokenState) error {
		_, err := s.p.GetAttributeValue(sh, pkcs11.ObjectHandle(obj), []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil)})
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID)) {
			return nil
		}
		exists = err == nil
		return err
	})
	return exists, err
}
