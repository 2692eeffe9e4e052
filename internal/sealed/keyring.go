package sealed

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"filippo.io/age"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// Cache bounds: how many opened values a Keyring keeps, and the largest
// document it keeps (a bigger one is opened on every use), so the cache
// stays small whatever pods send.
const (
	DefaultCacheSize  = 1024
	maxCachedDocument = 16 << 10
	// maxIdentityFile bounds an identity file: a few lines of keys.
	maxIdentityFile = 64 << 10
)

// Keyring is a node's age identities, read from files, and a cache of the
// values they opened. It implements document.Unsealer.
//
// Files are checked on every use by stat (a few syscalls, no read): a
// file added to a watched folder, removed, replaced or rewritten is
// reloaded before the value is opened, so rotation needs no restart and a
// removed identity stops opening values at once — entries it opened are
// dropped with it. Polling by stat is chosen over inotify because it is
// exact at the moment of use (no event delivery lag) and needs no
// goroutine; its cost is in BenchmarkUnsealWarm.
type Keyring struct {
	patterns []string
	owners   []uint32
	onError  func(path string, err error)
	onReload func(recipients []string)
	now      func() time.Time

	mu    sync.Mutex // serialises reloads
	state atomic.Pointer[keyState]
	cache *lru.Cache[[sha256.Size]byte, opened]
}

// keyState is one load of the identity files.
type keyState struct {
	ids []age.Identity
	fps []string
	// files are the paths read (globs expanded), dirs the folders whose
	// listing decides what globs match; stamp is their stat summary.
	files, dirs []string
	stamp       string
	gen         uint64
}

type opened struct {
	env Envelope
	gen uint64
}

// KeyringOption configures a Keyring.
type KeyringOption func(*Keyring)

// WithOwners sets the uids an identity file may belong to; the default
// is root alone.
func WithOwners(uids ...uint32) KeyringOption {
	return func(k *Keyring) { k.owners = uids }
}

// WithReloadErrors calls fn for each file a reload refuses (bad
// permissions, not an identity file); the others stay loaded.
func WithReloadErrors(fn func(path string, err error)) KeyringOption {
	return func(k *Keyring) { k.onError = fn }
}

// WithReloaded calls fn after each reload (a file changed) with the
// fingerprints of the identities now loaded, so an operator sees a
// rotation take effect.
func WithReloaded(fn func(recipients []string)) KeyringOption {
	return func(k *Keyring) { k.onReload = fn }
}

// WithClock replaces time.Now for not_after checks (tests).
func WithClock(now func() time.Time) KeyringOption {
	return func(k *Keyring) { k.now = now }
}

// WithCacheSize bounds the opened-value cache (DefaultCacheSize).
func WithCacheSize(n int) KeyringOption {
	return func(k *Keyring) {
		if n > 0 {
			k.cache, _ = lru.New[[sha256.Size]byte, opened](n)
		}
	}
}

// NewKeyring reads the identity files: paths or glob patterns (a folder
// of "*.key" files makes rotation a matter of adding and removing files).
// Each file must be a regular file owned by an allowed uid (root) and
// readable by its owner only (0600 or 0400); anything wider is refused.
// At start every problem is an error, a literal path that is missing
// included, and so is finding no identity at all.
func NewKeyring(patterns []string, opts ...KeyringOption) (*Keyring, error) {
	k := &Keyring{patterns: slices.Clone(patterns), owners: []uint32{0}, now: time.Now}
	k.cache, _ = lru.New[[sha256.Size]byte, opened](DefaultCacheSize)
	for _, o := range opts {
		o(k)
	}
	if len(patterns) == 0 {
		return nil, errors.New("no identity files")
	}
	st, errs := k.load(1)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(st.ids) == 0 {
		return nil, fmt.Errorf("no age identity in %s", strings.Join(patterns, ", "))
	}
	k.state.Store(st)
	return k, nil
}

// Recipients are the fingerprints of the loaded identities (as of the
// last use or Reload).
func (k *Keyring) Recipients() []string { return slices.Clone(k.state.Load().fps) }

// Reload checks the files now and reloads them if they changed; it
// reports the files a reload refused.
func (k *Keyring) Reload() error {
	_, errs := k.current()
	return errors.Join(errs...)
}

// current returns the identities, reloading them first if a file changed.
func (k *Keyring) current() (*keyState, []error) {
	st := k.state.Load()
	if k.stamp(st.files, st.dirs) == st.stamp {
		return st, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if st = k.state.Load(); k.stamp(st.files, st.dirs) == st.stamp {
		return st, nil
	}
	next, errs := k.load(st.gen + 1)
	for _, err := range errs {
		if k.onError != nil {
			var pe *fileError
			path := ""
			if errors.As(err, &pe) {
				path = pe.path
			}
			k.onError(path, err)
		}
	}
	k.state.Store(next)
	if k.onReload != nil {
		k.onReload(slices.Clone(next.fps))
	}
	return next, errs
}

// load reads every file the patterns name. Problems are returned, and the
// files with them left out.
func (k *Keyring) load(gen uint64) (*keyState, []error) {
	st := &keyState{gen: gen}
	var errs []error
	seen := map[string]bool{}
	for _, p := range k.patterns {
		files := []string{p}
		if isGlob(p) {
			st.dirs = append(st.dirs, filepath.Dir(p))
			m, err := filepath.Glob(p)
			if err != nil {
				errs = append(errs, &fileError{path: p, reason: "not a valid glob pattern"})
				continue
			}
			files = m
		}
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			ids, err := k.readFile(f)
			if err != nil {
				errs = append(errs, err)
				if isGlob(p) || !errors.Is(err, os.ErrNotExist) {
					// A file that is there but refused is still watched, so
					// fixing its mode reloads it.
					st.files = append(st.files, f)
				}
				continue
			}
			st.files = append(st.files, f)
			st.ids = append(st.ids, ids...)
		}
	}
	// A missing literal path is watched too: creating it reloads.
	for _, p := range k.patterns {
		if !isGlob(p) && !slices.Contains(st.files, p) {
			st.files = append(st.files, p)
		}
	}
	st.fps = Fingerprints(st.ids)
	st.stamp = k.stamp(st.files, st.dirs)
	return st, errs
}

// readFile reads one identity file after checking its owner and mode.
func (k *Keyring) readFile(path string) ([]age.Identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, &fileError{path: path, reason: "missing", err: os.ErrNotExist}
		}
		return nil, &fileError{path: path, reason: "cannot stat it"}
	}
	if !fi.Mode().IsRegular() {
		return nil, &fileError{path: path, reason: "not a regular file"}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, &fileError{path: path, reason: fmt.Sprintf("mode %04o lets others read it; an identity file must be 0600 (or 0400)", perm)}
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && !slices.Contains(k.owners, sys.Uid) {
		return nil, &fileError{path: path, reason: fmt.Sprintf("owned by uid %d; it must be owned by %s", sys.Uid, ownerList(k.owners))}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &fileError{path: path, reason: "cannot open it"}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil || len(b) > maxIdentityFile {
		return nil, &fileError{path: path, reason: "cannot read it (or larger than 64 KiB)"}
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		// age's messages name a line at most, never key material; ours
		// says what the file should hold.
		return nil, &fileError{path: path, reason: "not an age identity file (AGE-SECRET-KEY-1… lines, as `ctr-b9 keygen` or age-keygen writes)"}
	}
	return ids, nil
}

// stamp summarises what decides a load: each file's identity, size, time,
// mode and owner, and each glob folder's listing time.
func (k *Keyring) stamp(files, dirs []string) string {
	var b strings.Builder
	for _, group := range [][]string{dirs, files} {
		for _, p := range group {
			b.WriteString(p)
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				b.WriteString("|-\n")
				continue
			}
			fmt.Fprintf(&b, "|%d|%d|%d|%d.%d|%o|%d\n", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Mode, st.Uid)
		}
	}
	return b.String()
}

// Unseal implements document.Unsealer: it opens value with the current
// identities (once per distinct value, then from the cache), then checks
// the pod's namespace and the expiry on every use.
func (k *Keyring) Unseal(source, value, namespace string) (string, error) {
	st, _ := k.current()
	sum := sha256.Sum256([]byte(strings.TrimSpace(value)))
	o, ok := k.cache.Get(sum)
	if !ok || o.gen != st.gen {
		env, err := Open(source, value, st.ids)
		if err != nil {
			return "", err
		}
		o = opened{env: env, gen: st.gen}
		if len(env.Document) <= maxCachedDocument {
			k.cache.Add(sum, o)
		}
	}
	if err := o.env.Check(source, namespace, k.now()); err != nil {
		return "", err
	}
	return o.env.Document, nil
}

var _ document.Unsealer = (*Keyring)(nil)

// fileError is a refused identity file; it names the path, never content.
type fileError struct {
	path, reason string
	err          error
}

func (e *fileError) Error() string { return "identity file " + e.path + ": " + e.reason }
func (e *fileError) Unwrap() error { return e.err }

func isGlob(p string) bool { return strings.ContainsAny(p, "*?[") }

func ownerList(uids []uint32) string {
	s := make([]string, len(uids))
	for i, u := range uids {
		s[i] = fmt.Sprintf("uid %d", u)
	}
	sort.Strings(s)
	return strings.Join(s, " or ")
}
