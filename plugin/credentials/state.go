package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/nodekey"
	"github.com/beam-cloud/b9-resolver/internal/sealedfile"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Names inside StateDir.
const (
	StateFileName = "credentials.state"
	KeyFileName   = "node.key"
)

const (
	keySize = nodekey.Size // AES-256
	// stateMagic starts the file and is the GCM additional data, so a file
	// of another format or version is refused before anything is parsed.
	stateMagic   = "b9-credentials-state v1\n"
	stateVersion = 1
)

// stateFile is the record file: the JSON of every record, sealed under
// the node key (internal/sealedfile: magic, nonce, AES-GCM; replaced
// atomically). The whole file is sealed, not just the secrets, so which
// hosts and repositories a node pulled is not readable either.
type stateFile struct {
	file *sealedfile.File
	// refKey is the keychain's Credential.Ref key, derived from the node
	// key so refs in snapshot labels stay valid across restarts.
	refKey []byte
	// fingerprintKey keys the fingerprints ListCredentials shows, derived
	// from the node key so ctr-b9 given the key shows the same ones.
	fingerprintKey []byte
	// imageAccessKey is the image access records' key (ImageAccessKey).
	imageAccessKey []byte
}

// openState prepares dir (0700) and the node key (created 0600).
func openState(dir, keyFile string) (*stateFile, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("credentials state dir %q is not an absolute path: %w", dir, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials state dir: %w", err)
	}
	// The folder is ours alone; MkdirAll applied the umask and an existing
	// folder may have been made by hand.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials state dir: %w", err)
	}
	if keyFile == "" {
		keyFile = filepath.Join(dir, KeyFileName)
	}
	key, err := nodekey.LoadOrCreate(keyFile)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	file, err := sealedfile.New(filepath.Join(dir, StateFileName), key, stateMagic)
	if err != nil {
		return nil, fmt.Errorf("credentials node key: %w", err)
	}
	// Separate keys for refs and fingerprints: the encryption key is never
	// used raw for anything else.
	refKey, err := nodekey.Derive(key, nodekey.CredentialRef)
	if err != nil {
		return nil, err
	}
	fpKey, err := nodekey.Derive(key, nodekey.Fingerprint)
	if err != nil {
		return nil, err
	}
	accessKey, err := nodekey.Derive(key, nodekey.ImageAccess)
	if err != nil {
		return nil, err
	}
	return &stateFile{file: file, refKey: refKey, fingerprintKey: fpKey, imageAccessKey: accessKey}, nil
}

// The JSON inside the sealed file.
type stateJSON struct {
	Version int          `json:"version"`
	Records []recordJSON `json:"records"`
}

type recordJSON struct {
	Ref        string            `json:"ref,omitempty"`
	Registry   registry.Registry `json:"registry"`
	Repository string            `json:"repository"`
	At         time.Time         `json:"at"`
	ByRef      bool              `json:"by_ref,omitempty"`
	Latest     bool              `json:"latest,omitempty"`
	Namespace  string            `json:"namespace,omitempty"`
	Doc        docJSON           `json:"doc"`
}

// docJSON is a document with its values revealed: it only ever exists
// inside the sealed file.
type docJSON struct {
	Source       string            `json:"source"`
	Registry     string            `json:"registry,omitempty"`
	Type         document.Type     `json:"type"`
	TypeExplicit bool              `json:"type_explicit,omitempty"`
	Keys         map[string]string `json:"keys,omitempty"`
	// Node is Document.Node: a node credential (part of its identity).
	Node bool `json:"node,omitempty"`
	// Identity is Document.Identity, checked when the document is rebuilt.
	Identity string `json:"identity,omitempty"`
	// Fingerprint is only read, from files written before Identity was
	// (see legacyFingerprint). It never leaves the sealed file.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// save seals recs and replaces the file atomically, so a crash leaves the
// old state or the new, never half of one.
func (st *stateFile) save(recs []storedRecord) error {
	sj := stateJSON{Version: stateVersion, Records: make([]recordJSON, 0, len(recs))}
	for _, sr := range recs {
		r := sr.rec
		keys := make(map[string]string, len(r.doc.Keys))
		for k, v := range r.doc.Keys {
			keys[k] = v.Reveal()
		}
		sj.Records = append(sj.Records, recordJSON{
			Ref: r.ref, Registry: r.reg, Repository: r.repository, At: r.at, ByRef: sr.byRef, Latest: sr.latest, Namespace: r.namespace,
			Doc: docJSON{
				Source: r.doc.Source, Registry: r.doc.Registry, Type: r.doc.Type, TypeExplicit: r.doc.TypeExplicit,
				Keys: keys, Identity: r.doc.Identity(), Node: r.doc.Node,
			},
		})
	}
	plain, err := json.Marshal(sj)
	if err != nil {
		return fmt.Errorf("credentials state: %w", err)
	}
	defer clear(plain)
	if err := st.file.Save(plain); err != nil {
		return fmt.Errorf("credentials state: %w", err)
	}
	return nil
}

// loadedRecord is a record read back and the indexes it was in.
type loadedRecord struct {
	rec    *record
	byRef  bool
	latest bool
}

// load reads the state file (none: no records). A file that does not
// open under this key is moved aside (credentials.state.unreadable-<unix>)
// and nothing is loaded.
func (st *stateFile) load(ctx context.Context) ([]loadedRecord, error) {
	sj, err := st.read()
	if errors.Is(err, errdefs.ErrDataLoss) {
		aside, rerr := st.file.MoveAside()
		if rerr != nil {
			return nil, fmt.Errorf("credentials state: %w (and moving it aside: %w)", err, rerr)
		}
		logger(ctx).WithError(err).WithField("moved_to", aside).
			Warn("credentials state file is unreadable with this node key; starting with no records")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("credentials state: %w", err)
	}
	out := make([]loadedRecord, 0, len(sj.Records))
	for i, rj := range sj.Records {
		doc, err := rebuildDocument(rj)
		if err != nil {
			// Document errors name fields, never values.
			logger(ctx).WithError(err).WithField("record", i).WithField("registry", rj.Registry.Host).
				Warn("credentials state: record skipped")
			continue
		}
		out = append(out, loadedRecord{
			rec:   &record{ref: rj.Ref, reg: rj.Registry, repository: rj.Repository, doc: doc, at: rj.At, namespace: rj.Namespace},
			byRef: rj.ByRef && rj.Ref != "", latest: rj.Latest,
		})
	}
	return out, nil
}

// read opens and parses the file; no file is no records.
func (st *stateFile) read() (stateJSON, error) {
	plain, err := st.file.Load()
	if err != nil || plain == nil {
		return stateJSON{}, err
	}
	defer clear(plain)
	var sj stateJSON
	if err := json.Unmarshal(plain, &sj); err != nil {
		// json errors may quote input; the input holds secrets.
		return stateJSON{}, fmt.Errorf("credentials state: malformed JSON inside the sealed file: %w", errdefs.ErrDataLoss)
	}
	if sj.Version != stateVersion {
		return stateJSON{}, fmt.Errorf("credentials state: version %d, want %d: %w", sj.Version, stateVersion, errdefs.ErrDataLoss)
	}
	return sj, nil
}

// rebuildDocument re-parses a stored document the way it was first made
// and checks it is the same credential: a changed identity would change
// its ref, so such a record must not answer.
func rebuildDocument(rj recordJSON) (document.Document, error) {
	keys := make(map[string]secret.Secret, len(rj.Doc.Keys))
	for k, v := range rj.Doc.Keys {
		keys[k] = secret.New(v)
	}
	typ := document.Type("")
	if rj.Doc.TypeExplicit {
		typ = rj.Doc.Type
	}
	doc, err := document.New(rj.Doc.Source, rj.Doc.Registry, typ, keys, rj.Registry.Host)
	if err != nil {
		return document.Document{}, err
	}
	doc.Node = rj.Doc.Node
	same := doc.Identity() == rj.Doc.Identity
	if rj.Doc.Identity == "" {
		// Written before identities were stored.
		same = rj.Doc.Fingerprint != "" && legacyFingerprint(doc) == rj.Doc.Fingerprint
	}
	if doc.Type != rj.Doc.Type || !same {
		return document.Document{}, fmt.Errorf("stored document reads back as a different credential: %w", errdefs.ErrDataLoss)
	}
	return doc, nil
}

// legacyFingerprint is what files written before identities were stored
// hold to check a document by: the first 12 hex digits of its unkeyed
// identity without the tier, and for a node document those of the hash of
// "node" and that. It is only compared inside the sealed file, never shown.
func legacyFingerprint(doc document.Document) string {
	const n = len("sha256:") + 12
	pod := doc
	pod.Node = false
	fp := pod.Identity()[:n]
	if doc.Node {
		fp = secret.Hash("node", fp)[:n]
	}
	return fp
}
