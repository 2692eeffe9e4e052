package sealed

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

const canary = "CANARY-sealed-5e1f0a"

func identity(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func seal(t testing.TB, doc, ns string, notAfter time.Time, ids ...*age.X25519Identity) string {
	t.Helper()
	var rs []string
	for _, id := range ids {
		rs = append(rs, id.Recipient().String())
	}
	v, err := Seal(doc, rs, ns, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// rawSeal encrypts any plaintext (wrong versions, nested values) the way
// Seal does, for the bad-input table.
func rawSeal(t testing.TB, plain string, id *age.X25519Identity) string {
	t.Helper()
	r, err := ParseRecipient(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(plain))
	w.Close()
	return encode(buf.Bytes())
}

func TestSealOpenRoundTrip(t *testing.T) {
	node, other := identity(t), identity(t)
	for _, doc := range []string{
		`{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"` + canary + `"}}`,
		`[{"registry":"nvcr.io","credentials":{"NGC_API_KEY":"` + canary + `"}}]`,
		"robot:" + canary,
	} {
		v := seal(t, doc, "team-a", time.Time{}, other, node)
		if !strings.HasPrefix(v, document.SealedPrefix) || strings.Contains(v, canary) {
			t.Fatalf("sealed value %.40q… is not the wire form or carries the plaintext", v)
		}
		env, err := Open("annotation k", v, []age.Identity{node})
		if err != nil {
			t.Fatal(err)
		}
		if env.Namespace != "team-a" || env.Document != doc || !env.NotAfter.IsZero() {
			t.Errorf("opened %q/%v, want the document back for team-a", env.Namespace, env.NotAfter)
		}
		// Both recipients open it (several node pools, rotation).
		if _, err := Open("annotation k", v, []age.Identity{other}); err != nil {
			t.Errorf("second recipient: %v", err)
		}
		info, err := Inspect("annotation k", v)
		if err != nil || info.Stanzas != 2 || len(info.Recipients) != 2 {
			t.Errorf("Inspect = %+v, %v; want two named recipients", info, err)
		}
	}
}

func TestCheck(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	env := Envelope{Namespace: "team-a", NotAfter: now.Add(time.Hour)}
	cases := []struct {
		name  string
		env   Envelope
		ns    string
		class error
		text  string
	}{
		{"same namespace", env, "team-a", nil, ""},
		{"no expiry", Envelope{Namespace: "team-a"}, "team-a", nil, ""},
		{"other namespace", env, "team-b", errdefs.ErrPermissionDenied, "another namespace than the pod's (team-b)"},
		{"no pod namespace", env, "", errdefs.ErrPermissionDenied, "no pod namespace to check it against"},
		{"expired", Envelope{Namespace: "team-a", NotAfter: now.Add(-time.Second)}, "team-a", errdefs.ErrInvalidArgument, "expired at 2026-11-30T11:59:59Z"},
	}
	for _, c := range cases {
		err := c.env.Check("annotation k", c.ns, now)
		if c.class == nil {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.class) || !strings.Contains(err.Error(), c.text) || !strings.Contains(err.Error(), "annotation k") {
			t.Errorf("%s: %v, want %v saying %q and naming the key", c.name, err, c.class, c.text)
		}
		if c.ns == "team-b" && strings.Contains(err.Error(), "team-a") {
			t.Errorf("%s: the message names the sealed namespace: %v", c.name, err)
		}
	}
}

// Every bad input gets its gRPC class, names the source and never the
// value or what it decrypts to.
func TestBadSealedValues(t *testing.T) {
	node, stranger := identity(t), identity(t)
	good := seal(t, "robot:"+canary, "team-a", time.Time{}, node)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(good, document.SealedPrefix))
	flip := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return encode(b)
	}
	hdrEnd := bytes.Index(raw, []byte("\n--- ")) + 5
	huge := document.SealedPrefix + strings.Repeat("A", document.MaxDocumentBytes)
	manyRecipients := func() string {
		var hdr strings.Builder
		hdr.WriteString("age-encryption.org/v1\n")
		for range 2*MaxRecipients + 1 {
			hdr.WriteString("-> X25519 AAAA\nAAAA\n")
		}
		hdr.WriteString("--- AAAA\n")
		return encode([]byte(hdr.String()))
	}()
	cases := []struct {
		name  string
		value string
		class error
		text  string
	}{
		{"not base64", document.SealedPrefix + "!!!!", errdefs.ErrInvalidArgument, "not base64"},
		{"not age", encode([]byte("hello")), errdefs.ErrInvalidArgument, "not an age file"},
		{"truncated header", good[:60], errdefs.ErrInvalidArgument, ""},
		{"truncated payload", encode(raw[:len(raw)-8]), errdefs.ErrInvalidArgument, "truncated or altered"},
		{"bit flipped payload", flip(len(raw) - 3), errdefs.ErrInvalidArgument, "truncated or altered"},
		{"bit flipped MAC", flip(hdrEnd + 2), errdefs.ErrInvalidArgument, "altered"},
		{"bit flipped stanza", flip(bytes.Index(raw, []byte("\n-> X25519 ")) + 40), errdefs.ErrInvalidArgument, "altered"},
		{"wrong recipient", seal(t, "robot:"+canary, "team-a", time.Time{}, stranger), errdefs.ErrFailedPrecondition,
			"sealed for " + RecipientFingerprint(stranger.Recipient().String()) + "; the identities here are " + RecipientFingerprint(node.Recipient().String())},
		{"huge", huge, errdefs.ErrInvalidArgument, "more than the"},
		{"too many recipients", manyRecipients, errdefs.ErrInvalidArgument, "recipient stanzas"},
		{"wrong version", rawSeal(t, `{"v":2,"namespace":"team-a","document":"u:`+canary+`"}`, node), errdefs.ErrInvalidArgument, "envelope.v: version 2"},
		{"no version", rawSeal(t, `{"namespace":"team-a","document":"u:`+canary+`"}`, node), errdefs.ErrInvalidArgument, "version 0"},
		{"unknown field", rawSeal(t, `{"v":1,"namespace":"team-a","document":"u:p","`+canary+`":1}`, node), errdefs.ErrInvalidArgument, "unknown field"},
		{"not json", rawSeal(t, canary, node), errdefs.ErrInvalidArgument, "not a JSON object"},
		{"no document", rawSeal(t, `{"v":1,"namespace":"team-a"}`, node), errdefs.ErrInvalidArgument, "envelope.document: missing"},
		{"document number", rawSeal(t, `{"v":1,"namespace":"team-a","document":7}`, node), errdefs.ErrInvalidArgument, "envelope.document"},
		{"bad namespace", rawSeal(t, `{"v":1,"namespace":"Team_`+canary+`","document":"u:p"}`, node), errdefs.ErrInvalidArgument, "envelope.namespace"},
		{"bad not_after", rawSeal(t, `{"v":1,"namespace":"team-a","document":"u:p","not_after":"`+canary+`"}`, node), errdefs.ErrInvalidArgument, "envelope.not_after"},
		{"trailing data", rawSeal(t, `{"v":1,"namespace":"team-a","document":"u:p"} {}`, node), errdefs.ErrInvalidArgument, "data after"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open("annotation k", c.value, []age.Identity{node})
			if !errors.Is(err, c.class) {
				t.Fatalf("error %v, want %v", err, c.class)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.text) || !strings.Contains(msg, "annotation k") {
				t.Errorf("error %q does not say %q or name the source", msg, c.text)
			}
			if strings.Contains(msg, canary) || (len(c.value) > 20 && strings.Contains(msg, c.value[4:20])) {
				t.Errorf("error %q quotes the value or its plaintext", msg)
			}
		})
	}
}

func TestNestedSealedRefused(t *testing.T) {
	node := identity(t)
	inner := seal(t, "robot:"+canary, "team-a", time.Time{}, node)
	if _, err := Seal(inner, []string{node.Recipient().String()}, "team-a", time.Time{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Seal of a sealed value: %v, want InvalidArgument", err)
	}
	// Sealed by hand around a sealed value: the node parses the inner text
	// and refuses it.
	outer := rawSeal(t, `{"v":1,"namespace":"team-a","document":"`+inner+`"}`, node)
	kr := keyringFor(t, node)
	_, err := document.ParseValue("annotation k", outer, "ghcr.io", document.WithUnsealer(kr, "team-a"))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "sealed document inside a sealed document") {
		t.Errorf("nested: %v", err)
	}
}

func TestSealRefuses(t *testing.T) {
	r := identity(t).Recipient().String()
	many := make([]string, MaxRecipients+1)
	for i := range many {
		many[i] = r
	}
	for name, f := range map[string]func() (string, error){
		"no recipients":   func() (string, error) { return Seal("u:p", nil, "ns", time.Time{}) },
		"bad recipient":   func() (string, error) { return Seal("u:p", []string{"AGE-SECRET-KEY-1X"}, "ns", time.Time{}) },
		"too many":        func() (string, error) { return Seal("u:p", many, "ns", time.Time{}) },
		"empty document":  func() (string, error) { return Seal(" ", []string{r}, "ns", time.Time{}) },
		"empty namespace": func() (string, error) { return Seal("u:p", []string{r}, "", time.Time{}) },
		"bad namespace":   func() (string, error) { return Seal("u:p", []string{r}, "Team A", time.Time{}) },
	} {
		if _, err := f(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// writeIdentity writes id to dir/name with mode.
func writeIdentity(t testing.TB, dir, name string, mode os.FileMode, ids ...*age.X25519Identity) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# created by the test\n")
	for _, id := range ids {
		b.WriteString(id.String() + "\n")
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(b.String()), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func ownerOpt() KeyringOption { return WithOwners(uint32(os.Geteuid())) }

func keyringFor(t testing.TB, ids ...*age.X25519Identity) *Keyring {
	t.Helper()
	p := writeIdentity(t, t.TempDir(), "id.key", 0o600, ids...)
	k, err := NewKeyring([]string{p}, ownerOpt())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyringFilePermissions(t *testing.T) {
	dir := t.TempDir()
	id := identity(t)
	ok := writeIdentity(t, dir, "ok.key", 0o600, id)
	if _, err := NewKeyring([]string{ok}, ownerOpt()); err != nil {
		t.Fatalf("0600 file: %v", err)
	}
	if _, err := NewKeyring([]string{writeIdentity(t, dir, "ro.key", 0o400, id)}, ownerOpt()); err != nil {
		t.Errorf("0400 file: %v", err)
	}
	for _, c := range []struct {
		name, path, text string
		opts             []KeyringOption
	}{
		{"group readable", writeIdentity(t, dir, "g.key", 0o640, id), "mode 0640", []KeyringOption{ownerOpt()}},
		{"world readable", writeIdentity(t, dir, "w.key", 0o644, id), "mode 0644", []KeyringOption{ownerOpt()}},
		{"wrong owner", ok, "owned by uid", []KeyringOption{WithOwners(uint32(os.Geteuid()) + 4242)}},
		{"missing", filepath.Join(dir, "none.key"), "missing", []KeyringOption{ownerOpt()}},
		{"not identities", writeFile(t, dir, "bad.key", "AGE-SECRET-KEY-1"+canary+"\n"), "not an age identity file", []KeyringOption{ownerOpt()}},
		{"a folder", dir, "not a regular file", []KeyringOption{ownerOpt()}},
		{"empty glob", filepath.Join(dir, "nothing-*.key"), "no age identity", []KeyringOption{ownerOpt()}},
	} {
		_, err := NewKeyring([]string{c.path}, c.opts...)
		if err == nil || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want %q", c.name, err, c.text)
		}
		if err != nil && strings.Contains(err.Error(), canary) {
			t.Errorf("%s: the error quotes the file: %v", c.name, err)
		}
	}
}

func writeFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Rotation without a restart: a new identity file appears in the folder,
// the old one goes; values for the new key open at once, values for the
// old one (cached before) are refused at once.
func TestKeyringRotation(t *testing.T) {
	dir := t.TempDir()
	oldID, newID := identity(t), identity(t)
	oldPath := writeIdentity(t, dir, "old.key", 0o600, oldID)
	var reloadErrs []string
	var loaded [][]string
	k, err := NewKeyring([]string{filepath.Join(dir, "*.key")}, ownerOpt(),
		WithReloadErrors(func(p string, err error) { reloadErrs = append(reloadErrs, err.Error()) }),
		WithReloaded(func(fps []string) { loaded = append(loaded, fps) }))
	if err != nil {
		t.Fatal(err)
	}
	oldValue := seal(t, "robot:"+canary, "team-a", time.Time{}, oldID)
	newValue := seal(t, "robot:"+canary, "team-a", time.Time{}, newID)
	if _, err := k.Unseal("annotation k", oldValue, "team-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Unseal("annotation k", newValue, "team-a"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("value for a key not yet installed: %v", err)
	}

	writeIdentity(t, dir, "new.key", 0o600, newID)
	if _, err := k.Unseal("annotation k", newValue, "team-a"); err != nil {
		t.Fatalf("after adding the new identity: %v", err)
	}
	if got := len(k.Recipients()); got != 2 {
		t.Errorf("%d identities loaded, want 2", got)
	}
	if len(loaded) != 1 || len(loaded[0]) != 2 {
		t.Errorf("reloads reported %v, want one with both identities", loaded)
	}
	if err := os.Remove(oldPath); err != nil {
		t.Fatal(err)
	}
	_, err = k.Unseal("annotation k", oldValue, "team-a")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), RecipientFingerprint(oldID.Recipient().String())) {
		t.Fatalf("old value after its identity was removed: %v, want FailedPrecondition naming its recipient", err)
	}

	// A file with a wider mode is refused on reload too, and reported.
	writeIdentity(t, dir, "loose.key", 0o644, oldID)
	if _, err := k.Unseal("annotation k", oldValue, "team-a"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("value for an identity in a 0644 file: %v", err)
	}
	if len(reloadErrs) != 1 || !strings.Contains(reloadErrs[0], "loose.key: mode 0644") {
		t.Errorf("reload errors %q, want the loose file", reloadErrs)
	}
	// Rewriting a file in place (same name) reloads it.
	writeIdentity(t, dir, "new.key", 0o600, oldID)
	if _, err := k.Unseal("annotation k", oldValue, "team-a"); err != nil {
		t.Errorf("after rewriting new.key with the old identity: %v", err)
	}
	if _, err := k.Unseal("annotation k", newValue, "team-a"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("cached value whose identity was rewritten away: %v", err)
	}
}

func TestKeyringChecksEveryUse(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	id := identity(t)
	k := keyringFor(t, id)
	k.now = func() time.Time { return now }
	v := seal(t, "robot:"+canary, "team-a", now.Add(time.Minute), id)
	if _, err := k.Unseal("annotation k", v, "team-a"); err != nil {
		t.Fatal(err)
	}
	// Cached now; the namespace and the clock are still checked.
	if _, err := k.Unseal("annotation k", v, "team-b"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("cached value in another namespace: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := k.Unseal("annotation k", v, "team-a"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("cached value after not_after: %v", err)
	}
}

func TestParseValueRequireSealed(t *testing.T) {
	id := identity(t)
	k := keyringFor(t, id)
	v := seal(t, `{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"`+canary+`"}}`, "team-a", time.Time{}, id)
	docs, err := document.ParseValue("annotation k", v, "ghcr.io", document.WithUnsealer(k, "team-a"), document.RequireSealed(true))
	if err != nil || len(docs) != 1 || !docs[0].Sealed || docs[0].Registry != "ghcr.io" || docs[0].Get("GITHUB_TOKEN").Reveal() != canary {
		t.Fatalf("sealed value under require: %+v, %v", docs, err)
	}
	_, err = document.ParseValue("annotation k", "robot:"+canary, "ghcr.io", document.WithUnsealer(k, "team-a"), document.RequireSealed(true))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "sealed.require") || strings.Contains(err.Error(), canary) {
		t.Errorf("plain value under require: %v", err)
	}
	// Without identities a sealed value is refused, not read as user "age".
	_, err = document.ParseValue("annotation k", v, "ghcr.io")
	if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("sealed value without an unsealer: %v", err)
	}
	if _, err := document.Parse("node_credentials.documents[0]", v, ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("sealed value where only plain ones are read: %v", err)
	}
}

// TestKeyringKubernetesSecretVolume reads identities the way a DaemonSet
// gets them: a Secret volume, where each key is a symlink through ..data
// to a timestamped folder that kubelet swaps atomically on update. The
// glob skips the dot entries, and a swap is a rotation without restart.
func TestKeyringKubernetesSecretVolume(t *testing.T) {
	dir := t.TempDir()
	oldID, newID := identity(t), identity(t)
	publish := func(version string, id *age.X25519Identity) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
			t.Fatal(err)
		}
		writeIdentity(t, filepath.Join(dir, version), "node.key", 0o400, id)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish("..2026_11_30_01", oldID)
	if err := os.Symlink(filepath.Join("..data", "node.key"), filepath.Join(dir, "node.key")); err != nil {
		t.Fatal(err)
	}
	var reloadErrs []string
	k, err := NewKeyring([]string{filepath.Join(dir, "[^.]*")}, ownerOpt(),
		WithReloadErrors(func(p string, err error) { reloadErrs = append(reloadErrs, err.Error()) }))
	if err != nil {
		t.Fatal(err)
	}
	oldValue := seal(t, "robot:"+canary, "team-a", time.Time{}, oldID)
	newValue := seal(t, "robot:"+canary, "team-a", time.Time{}, newID)
	if _, err := k.Unseal("annotation k", oldValue, "team-a"); err != nil {
		t.Fatalf("identity from the Secret volume: %v", err)
	}
	if got := k.Recipients(); len(got) != 1 {
		t.Errorf("%d identities loaded, want 1 (the dot entries are not identity files)", len(got))
	}

	publish("..2026_11_30_02", newID) // kubelet's update of the Secret
	if _, err := k.Unseal("annotation k", newValue, "team-a"); err != nil {
		t.Fatalf("after the Secret was updated: %v", err)
	}
	if _, err := k.Unseal("annotation k", oldValue, "team-a"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("value for the replaced identity: %v, want FailedPrecondition", err)
	}
	if len(reloadErrs) != 0 {
		t.Errorf("reload errors: %v", reloadErrs)
	}
}
