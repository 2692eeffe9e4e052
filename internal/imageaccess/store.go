package imageaccess

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/sealedfile"
)

// Defaults for Config.
const (
	// DefaultMaxRecords bounds the records: far more images than a node
	// keeps; the least recently verified go first.
	DefaultMaxRecords = 16384
	// DefaultMaxCredentials bounds the fingerprints on one record (the
	// credentials of that many tenants pulling one image); the least
	// recently verified go first.
	DefaultMaxCredentials = 64
	// FileName is the records file's name in the state folder.
	FileName = "image-access.state"
)

const (
	fileMagic   = "b9-image-access v1\n"
	fileVersion = 1
	// Labels of the keys derived from Config.Key (HKDF info).
	sealKeyInfo        = "b9-resolver image-access seal key v1"
	fingerprintKeyInfo = "b9-resolver image-access fingerprint key v1"
)

// Config configures a Store.
type Config struct {
	// Path is the sealed records file; "" keeps records in memory only.
	Path string
	// Key is 32 secret bytes the seal and fingerprint keys are derived
	// from (the node key, or a key derived from it). Required with Path;
	// without Path, nil means a random key for this process.
	Key []byte
	// MaxRecords and MaxCredentials bound the records (defaults above).
	MaxRecords, MaxCredentials int
	// Now is the clock (tests).
	Now func() time.Time
}

// Key names a record: a repository (the full name, "host/path") and an
// image id (the config digest CRI reports).
type Key struct {
	Repository string
	ImageID    string
}

// Record is what is known about one repository's image.
type Record struct {
	// Open: a pull with no pod credential got it from the repository.
	Open bool
	// Credentials are the fingerprints of the credentials the registry
	// accepted for it, with when it last did.
	Credentials map[string]time.Time
	// At is when the record last changed.
	At time.Time
}

// Store holds the records. It is safe for concurrent use; no method does
// I/O while holding its lock.
type Store struct {
	mu      sync.Mutex
	records map[Key]*Record
	since   time.Time
	max     int
	maxCred int
	now     func() time.Time
	fpKey   []byte

	file *sealedfile.File // nil: memory only
	// saveMu serialises saves, so an older snapshot never replaces a newer.
	saveMu sync.Mutex
	dirty  chan struct{} // a save is wanted
	stop   chan struct{}
	done   chan struct{}
	// closeOnce makes Close idempotent.
	closeOnce sync.Once
}

// Open returns a Store, loading the records a previous run kept at
// cfg.Path. A file that does not open under the key is moved aside and
// the Store starts empty (and its Since is now), as on a first start.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{records: map[Key]*Record{}, max: cfg.MaxRecords, maxCred: cfg.MaxCredentials, now: cfg.Now}
	if s.max <= 0 {
		s.max = DefaultMaxRecords
	}
	if s.maxCred <= 0 {
		s.maxCred = DefaultMaxCredentials
	}
	if s.now == nil {
		s.now = time.Now
	}
	key := cfg.Key
	if cfg.Path != "" && len(key) == 0 {
		return nil, fmt.Errorf("image access records %s: no key: %w", cfg.Path, errdefs.ErrInvalidArgument)
	}
	if len(key) == 0 {
		key = make([]byte, sealedfile.KeySize)
		_, _ = rand.Read(key) // never fails: it panics if the OS cannot give randomness
	}
	var err error
	if s.fpKey, err = hkdf.Key(sha256.New, key, nil, fingerprintKeyInfo, sealedfile.KeySize); err != nil {
		return nil, fmt.Errorf("image access records: %w", err)
	}
	s.since = s.now()
	if cfg.Path == "" {
		return s, nil
	}
	sealKey, err := hkdf.Key(sha256.New, key, nil, sealKeyInfo, sealedfile.KeySize)
	if err != nil {
		return nil, fmt.Errorf("image access records: %w", err)
	}
	if s.file, err = sealedfile.New(cfg.Path, sealKey, fileMagic); err != nil {
		return nil, err
	}
	s.dirty, s.stop, s.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	go s.saveLoop(ctx)
	return s, nil
}

// The JSON inside the sealed file.
type fileJSON struct {
	Version int          `json:"version"`
	Since   time.Time    `json:"since"`
	Records []recordJSON `json:"records"`
}

type recordJSON struct {
	Repository  string               `json:"repository"`
	ImageID     string               `json:"image_id"`
	Open        bool                 `json:"open,omitempty"`
	Credentials map[string]time.Time `json:"credentials,omitempty"`
	At          time.Time            `json:"at"`
}

func (s *Store) load(ctx context.Context) error {
	plain, err := s.file.Load()
	if errors.Is(err, errdefs.ErrDataLoss) {
		aside, merr := s.file.MoveAside()
		if merr != nil {
			return fmt.Errorf("%w (and moving it aside: %w)", err, merr)
		}
		log.G(ctx).WithError(err).WithField("moved_to", aside).
			Warn("b9-resolver: image access records are unreadable with this node key; starting with none")
		s.changed()
		return nil
	}
	if err != nil {
		return err
	}
	if plain == nil {
		// A first start: write Since now, so a restart before the first
		// pull does not move it (and call older images preloaded).
		s.changed()
		return nil
	}
	var fj fileJSON
	if err := json.Unmarshal(plain, &fj); err != nil || fj.Version != fileVersion {
		return fmt.Errorf("image access records %s: unreadable contents (version %d): %w", s.file.Path(), fj.Version, errdefs.ErrDataLoss)
	}
	s.since = fj.Since
	for _, r := range fj.Records {
		s.records[Key{r.Repository, r.ImageID}] = &Record{Open: r.Open, Credentials: r.Credentials, At: r.At}
	}
	return nil
}

// Since is when this node started keeping records (the first start with a
// state file; this process's start without one). An image record older
// than it was on the node before: preloaded.
func (s *Store) Since() time.Time { return s.since }

// Fingerprint is the record's handle for a credential: the full
// HMAC-SHA256 of parts (each length-prefixed) under the store's
// fingerprint key. Give it what identifies the credential's source (a
// document's full identity hash; an identity token itself).
func (s *Store) Fingerprint(parts ...string) string {
	m := hmac.New(sha256.New, s.fpKey)
	for _, p := range parts {
		fmt.Fprintf(m, "%d:", len(p))
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Get returns a copy of k's record.
func (s *Store) Get(k Key) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[k]
	if !ok {
		return Record{}, false
	}
	out := *r
	out.Credentials = make(map[string]time.Time, len(r.Credentials))
	for fp, at := range r.Credentials {
		out.Credentials[fp] = at
	}
	return out, true
}

// OpenAnywhere reports whether the image is open in some repository (for
// a request by image id, which names none).
func (s *Store) OpenAnywhere(imageID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.records {
		if k.ImageID == imageID && r.Open {
			return true
		}
	}
	return false
}

// Accepted records that the repository's registry served the image to a
// pull: openly (no pod credential), or to the credential fingerprint.
// Open is never taken back.
func (s *Store) Accepted(k Key, open bool, fingerprint string) {
	now := s.now()
	s.mu.Lock()
	r := s.records[k]
	if r == nil {
		r = &Record{}
		s.records[k] = r
	}
	r.At = now
	if open {
		r.Open = true
	}
	if fingerprint != "" {
		if r.Credentials == nil {
			r.Credentials = map[string]time.Time{}
		}
		r.Credentials[fingerprint] = now
		evictOldest(r.Credentials, s.maxCred, func(at time.Time) time.Time { return at })
	}
	evictOldest(s.records, s.max, func(r *Record) time.Time { return r.At })
	s.mu.Unlock()
	s.changed()
}

// Refused drops a credential the registry refused (401/403) for the
// image: it no longer counts, not even while the registry is unreachable.
func (s *Store) Refused(k Key, fingerprint string) {
	s.mu.Lock()
	r := s.records[k]
	_, had := r.credential(fingerprint)
	if had {
		delete(r.Credentials, fingerprint)
		r.At = s.now()
	}
	s.mu.Unlock()
	if had {
		s.changed()
	}
}

// credential returns when fingerprint was last accepted, if it was.
func (r *Record) credential(fingerprint string) (time.Time, bool) {
	if r == nil || fingerprint == "" {
		return time.Time{}, false
	}
	at, ok := r.Credentials[fingerprint]
	return at, ok
}

// Has reports whether the registry accepted fingerprint for the image,
// within ttl of now when ttl > 0.
func (r Record) Has(fingerprint string, ttl time.Duration, now time.Time) bool {
	at, ok := r.credential(fingerprint)
	return ok && (ttl <= 0 || now.Sub(at) < ttl)
}

// evictOldest drops m's oldest entries (by at) until it holds at most max.
func evictOldest[K comparable, V any](m map[K]V, max int, at func(V) time.Time) {
	for len(m) > max {
		var oldest K
		var t time.Time
		first := true
		for k, v := range m {
			if a := at(v); first || a.Before(t) {
				oldest, t, first = k, a, false
			}
		}
		delete(m, oldest)
	}
}

// changed asks the saver for a save; saves coalesce.
func (s *Store) changed() {
	if s.file == nil {
		return
	}
	select {
	case s.dirty <- struct{}{}:
	default: // one is already wanted; it will include this change
	}
}

// saveLoop writes the file after changes, one save at a time, each with
// everything changed until it snapshots.
func (s *Store) saveLoop(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-s.dirty:
			s.save(ctx)
		case <-s.stop:
			select {
			case <-s.dirty:
				s.save(ctx)
			default:
			}
			return
		}
	}
}

func (s *Store) save(ctx context.Context) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	fj := fileJSON{Version: fileVersion, Since: s.since, Records: make([]recordJSON, 0, len(s.records))}
	for k, r := range s.records {
		creds := make(map[string]time.Time, len(r.Credentials))
		for fp, at := range r.Credentials {
			creds[fp] = at
		}
		fj.Records = append(fj.Records, recordJSON{Repository: k.Repository, ImageID: k.ImageID, Open: r.Open, Credentials: creds, At: r.At})
	}
	s.mu.Unlock()
	plain, err := json.Marshal(fj)
	if err == nil {
		err = s.file.Save(plain)
	}
	if err != nil {
		// Kept in memory; the next change tries again.
		log.G(ctx).WithError(err).Warn("b9-resolver: saving the image access records failed")
	}
}

// Flush writes pending changes now (tests, shutdown).
func (s *Store) Flush(ctx context.Context) {
	if s.file != nil {
		s.save(ctx)
	}
}

// Close writes what is pending and stops the saver.
func (s *Store) Close() error {
	if s.file == nil {
		return nil
	}
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
	})
	return nil
}
