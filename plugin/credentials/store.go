package credentials

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// StateDir, when set, keeps the records across restarts in
	// StateDir/credentials.state, encrypted with AES-256-GCM under the key
	// in KeyFile. The folder is made 0700, the files 0600. Empty keeps the
	// records in memory only: after a restart old refs answer NotFound.
	StateDir string
	// KeyFile is the node key (32 random bytes, created 0600 when absent).
	// Default StateDir/node.key. A key readable by group or others is
	// refused. Keep it off the disk image the state may be copied with.
	KeyFile string
	// MaxRecords bounds each index (refs; host/repository pairs). Default
	// DefaultMaxRecords; the least recently recorded are dropped first,
	// never one whose ref is on a live snapshot (SetLiveRefs).
	MaxRecords int
	// MaxRecordsPerSource bounds each credential source's share of an
	// index (a pod namespace; the node's own credentials), so one
	// tenant's flood of pulls evicts its own records, not another's.
	// Default DefaultMaxRecordsPerSource (never more than MaxRecords).
	MaxRecordsPerSource int
}

// record is one pull's credential: the source document, never a minted
// token, so each answer can re-mint. Records are immutable once stored.
type record struct {
	ref        string
	reg        registry.Registry
	repository string
	doc        document.Document
	at         time.Time
	// namespace is the pod namespace whose pull made the record ("" when
	// the pull named no pod).
	namespace string
}

// source is the credential source a record counts against: the node's
// own credentials, or the namespace of the pod that pulled.
func (r *record) source() string {
	if r.doc.Node {
		return "node"
	}
	return "namespace/" + r.namespace
}

type repoKey struct{ host, repository string }

// refKey indexes records by credential ref and host. A ref names a
// keychain cache entry, whose scope can be wider than a host (one ECR
// token serves every account of a region; one GCP token every GCP host),
// so pulls from two hosts with one document share a ref: each host keeps
// its own record, and a ref answers only for hosts it pulled from.
type refKey struct{ ref, host string }

// Store holds what the CRI service recorded about successful pulls.
// It is safe for concurrent use.
type Store struct {
	mu     sync.RWMutex
	byRef  map[refKey]*record
	byRepo map[repoKey]*record
	max    int
	// maxPerSource bounds each record source's share of an index.
	maxPerSource int
	now          func() time.Time
	// liveMu guards liveRefs and live, the last listing of the refs on
	// snapshots (see currentLive); never held with mu.
	liveMu   sync.Mutex
	liveRefs LiveRefs
	live     liveSet
	state    *stateFile // nil: memory only
	// gen counts changes a restart would need (under mu). saveMu
	// serialises writes of the state file; savedGen (under saveMu) is the
	// generation the file holds, so a change a later save already wrote is
	// not written again, and no older snapshot ever replaces a newer one.
	gen      uint64
	saveMu   sync.Mutex
	savedGen uint64
}

// NewStore returns a Store; with cfg.StateDir it loads what a previous run
// kept. A state file that cannot be decrypted (a new node key, a corrupt
// file) is moved aside and the Store starts empty: lazy mounts then fall
// back as after a restart without persistence, rather than the plugin
// failing to start.
func NewStore(ctx context.Context, cfg StoreConfig) (*Store, error) {
	s := &Store{
		byRef:  map[refKey]*record{},
		byRepo: map[repoKey]*record{},
		max:    cfg.MaxRecords,
		now:    time.Now,
	}
	if s.max <= 0 {
		s.max = DefaultMaxRecords
	}
	s.maxPerSource = cfg.MaxRecordsPerSource
	if s.maxPerSource <= 0 {
		s.maxPerSource = DefaultMaxRecordsPerSource
	}
	s.maxPerSource = min(s.maxPerSource, s.max)
	if cfg.StateDir == "" {
		return s, nil
	}
	st, err := openState(cfg.StateDir, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	s.state = st
	recs, err := st.load(ctx)
	if err != nil {
		return nil, err
	}
	for _, lr := range recs {
		if lr.byRef {
			s.byRef[refKey{lr.rec.ref, lr.rec.reg.Host}] = lr.rec
		}
		if lr.latest {
			s.byRepo[repoKey{lr.rec.reg.Host, lr.rec.repository}] = lr.rec
		}
	}
	return s, nil
}

// Record remembers that doc successfully pulled repository from reg, with
// the credential whose keychain.Credential.Ref is credentialRef (the value
// of the containerd.io/snapshot/b9.credential-ref label; "" when the pull
// set none, e.g. a public document). The CRI service calls it after every
// successful pull, for the image's host. The record answers both that ref
// and, as the most recent successful credential, reg.Host/repository.
//
// An error means the record was not kept (bad arguments) or not persisted
// (it is still served from memory); either way the pull itself succeeded
// and must not fail because of it.
func (s *Store) Record(credentialRef string, reg registry.Registry, repository string, doc document.Document, opts ...RecordOption) error {
	host, err := registry.NormalizeHost(reg.Host)
	if err != nil {
		return fmt.Errorf("record pull credential: %w", err)
	}
	reg.Host = host
	repository = normalizeRepository(host, repository)
	if repository == "" {
		return fmt.Errorf("record pull credential for %s: empty repository: %w", host, errdefs.ErrInvalidArgument)
	}
	if doc.Type == "" {
		return fmt.Errorf("record pull credential for %s/%s: document has no type: %w", host, repository, errdefs.ErrInvalidArgument)
	}
	r := &record{ref: credentialRef, reg: reg, repository: repository, doc: doc, at: s.now()}
	for _, o := range opts {
		o(r)
	}
	key := repoKey{host, repository}

	s.mu.Lock()
	changed := !sameRecord(s.byRepo[key], r)
	s.byRepo[key] = r
	if credentialRef != "" {
		rk := refKey{credentialRef, host}
		changed = changed || !sameRecord(s.byRef[rk], r)
		s.byRef[rk] = r
	}
	over := s.overLocked(r.source())
	s.mu.Unlock()
	if over {
		// Listing the live refs asks containerd: not under mu.
		live := s.currentLive()
		s.mu.Lock()
		changed = s.evictLocked(live) || changed
		s.mu.Unlock()
	}
	var gen uint64
	if changed && s.state != nil {
		s.mu.Lock()
		s.gen++
		gen = s.gen
		s.mu.Unlock()
	}

	// Re-recording what is already stored (every pull of a popular image)
	// only refreshes its time in memory: the disk is written when something
	// a restart would need has changed.
	if gen == 0 {
		return nil
	}
	if err := s.persist(gen); err != nil {
		return fmt.Errorf("record pull credential for %s/%s: kept in memory, not persisted: %w", host, repository, err)
	}
	return nil
}

// RecordOption adds what a pull knows about itself to its record.
type RecordOption func(*record)

// InNamespace names the pod namespace whose pull made the record: the
// credential source its share of the Store is counted against.
func InNamespace(ns string) RecordOption { return func(r *record) { r.namespace = ns } }

// persist writes the state file once it holds at least generation gen.
// Saves are serialised and each writes the latest state, snapshotted
// while it holds saveMu: two concurrent Records can no longer rename an
// older snapshot over a newer one. A save that finds its change already
// written by a later one (which snapshotted after it) returns at once.
func (s *Store) persist(gen uint64) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.savedGen >= gen {
		return nil
	}
	s.mu.RLock()
	snapshot, latest := s.snapshotLocked(), s.gen
	s.mu.RUnlock()
	if err := s.state.save(snapshot); err != nil {
		return err
	}
	s.savedGen = latest
	return nil
}

// RefKey is the key the keychain's Credential.Ref HMAC must use so refs
// survive a restart along with the records that hold them: derived from
// the node key (never the encryption key itself), so the same on every
// start with the same key file. nil for a memory-only Store, whose records
// die with the process (a random per-process ref key is right there).
func (s *Store) RefKey() []byte {
	if s.state == nil {
		return nil
	}
	return append([]byte(nil), s.state.refKey...)
}

// FingerprintKey is the key the keychain's fingerprints must be an HMAC
// under so ctr-b9 --node-key shows the same ones as ListCredentials:
// derived from the node key like RefKey, for another purpose. nil for a
// memory-only Store (the keychain's random per-process key is right
// there: its fingerprints compare only with each other).
func (s *Store) FingerprintKey() []byte {
	if s.state == nil {
		return nil
	}
	return append([]byte(nil), s.state.fingerprintKey...)
}

// ImageAccessKey is the key the image service's access records
// (ensure_secret_pulled_images) are sealed and fingerprinted under,
// derived from the node key for that purpose alone; nil for a memory-only
// Store.
func (s *Store) ImageAccessKey() []byte {
	if s.state == nil {
		return nil
	}
	return append([]byte(nil), s.state.imageAccessKey...)
}

// StateDir is the folder the records are kept in ("" for a memory-only
// Store).
func (s *Store) StateDir() string {
	if s.state == nil {
		return ""
	}
	return filepath.Dir(s.state.file.Path())
}

// sameRecord reports whether old already says what r says.
func sameRecord(old, r *record) bool {
	return old != nil && old.ref == r.ref && old.reg == r.reg && old.repository == r.repository &&
		old.doc.Identity() == r.doc.Identity() && old.doc.Source == r.doc.Source
}

// byCredentialRef returns the record a ref names for a canonical host.
func (s *Store) byCredentialRef(ref, host string) (*record, bool) {
	s.mu.RLock()
	r, ok := s.byRef[refKey{ref, host}]
	s.mu.RUnlock()
	return r, ok
}

// refKnown reports whether ref was recorded for any host (for the error
// of a lookup on another host). A scan: it runs on misses only.
func (s *Store) refKnown(ref string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for k := range s.byRef {
		if k.ref == ref {
			return true
		}
	}
	return false
}

// latest returns the most recent record for host/repository.
func (s *Store) latest(host, repository string) (*record, bool) {
	s.mu.RLock()
	r, ok := s.byRepo[repoKey{host, repository}]
	s.mu.RUnlock()
	return r, ok
}

// Len is the number of ref/host and host/repository pairs held.
func (s *Store) Len() (refs, repositories int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byRef), len(s.byRepo)
}

// snapshotLocked lists each distinct record once with the indexes it is in.
func (s *Store) snapshotLocked() []storedRecord {
	seen := map[*record]int{}
	var out []storedRecord
	add := func(r *record) int {
		if i, ok := seen[r]; ok {
			return i
		}
		seen[r] = len(out)
		out = append(out, storedRecord{rec: r})
		return len(out) - 1
	}
	for k, r := range s.byRef {
		if k.ref == r.ref && k.host == r.reg.Host {
			out[add(r)].byRef = true
		}
	}
	for _, r := range s.byRepo {
		out[add(r)].latest = true
	}
	return out
}

// storedRecord is a record and the indexes it belongs to.
type storedRecord struct {
	rec    *record
	byRef  bool
	latest bool
}

// normalizeRepository makes the repository a caller names match what a
// pull recorded: no slashes around it, and Docker Hub's official images
// under library/ as go-containerregistry (CLIP) and containerd name them.
func normalizeRepository(host, repository string) string {
	repository = strings.Trim(repository, "/")
	if host == registry.DockerHubHost && repository != "" && !strings.Contains(repository, "/") {
		repository = "library/" + repository
	}
	return repository
}

func logger(ctx context.Context) *log.Entry {
	return log.G(ctx).WithField("component", "b9-credentials")
}
