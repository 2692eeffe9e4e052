package nodekey

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	key, err := LoadOrCreate(path)
	if err != nil || len(key) != Size {
		t.Fatalf("create: %d bytes, %v", len(key), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	again, err := LoadOrCreate(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("a second start made another key (%v)", err)
	}
	if loaded, err := Load(path); err != nil || !bytes.Equal(loaded, key) {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Fatal("Load of a missing file succeeded (it must never create one)")
	}
}

// A key others may read, or of the wrong size, is refused, naming the
// path and never the key.
func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"group readable": {bytes.Repeat([]byte{7}, Size), 0o640},
		"world readable": {bytes.Repeat([]byte{7}, Size), 0o644},
		"short":          {[]byte("xq9z7"), 0o600},
		"long":           {bytes.Repeat([]byte{7}, Size+1), 0o600},
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if !errdefs.IsFailedPrecondition(err) || !bytes.Contains([]byte(err.Error()), []byte(path)) {
			t.Errorf("%s: %v, want FailedPrecondition naming the file", name, err)
		}
		if bytes.Contains([]byte(err.Error()), tc.data) {
			t.Errorf("%s: the error shows the key", name)
		}
	}
}

// Each purpose gets its own key, stable for a node key, never the node
// key itself, and different for another node key.
func TestDerive(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, Size), bytes.Repeat([]byte{2}, Size)
	seen := map[string]Purpose{}
	for _, p := range []Purpose{CredentialRef, Fingerprint, ImageAccess} {
		k, err := Derive(a, p)
		if err != nil || len(k) != Size {
			t.Fatalf("%s: %d bytes, %v", p, len(k), err)
		}
		if again, _ := Derive(a, p); !bytes.Equal(again, k) {
			t.Errorf("%s: not stable", p)
		}
		if other, _ := Derive(b, p); bytes.Equal(other, k) {
			t.Errorf("%s: the same under another node key", p)
		}
		if bytes.Equal(k, a) {
			t.Errorf("%s: the node key itself", p)
		}
		if q, dup := seen[string(k)]; dup {
			t.Errorf("%s and %s share a key", p, q)
		}
		seen[string(k)] = p
	}
}
