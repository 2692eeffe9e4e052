package sealedfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// What is saved opens again under the same key and magic, and nothing
// of it is readable on disk; another key or another format is DataLoss,
// and MoveAside keeps the file for whoever has the old key.
func TestSealedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.state")
	f, err := New(path, key(1), "test v1\n")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := f.Load(); b != nil || err != nil {
		t.Fatalf("Load before any Save = %q, %v; want nothing", b, err)
	}
	const plain = `{"canary":"canary-sealed-5e1f"}`
	if err := f.Save([]byte(plain)); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "canary") {
		t.Error("the plain text is readable in the file")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %s, want 0600", fi.Mode().Perm())
	}
	if b, err := f.Load(); err != nil || string(b) != plain {
		t.Fatalf("Load = %q, %v", b, err)
	}
	for name, other := range map[string]func() (*File, error){
		"another key":    func() (*File, error) { return New(path, key(2), "test v1\n") },
		"another format": func() (*File, error) { return New(path, key(1), "test v2\n") },
	} {
		o, err := other()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Load(); !errdefs.IsDataLoss(err) {
			t.Errorf("%s: Load error %v, want DataLoss", name, err)
		}
	}
	aside, err := f.MoveAside()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(aside); err != nil || !strings.HasPrefix(aside, path+".unreadable-") {
		t.Errorf("moved aside to %q: %v", aside, err)
	}
	if _, err := New(path, key(1)[:16], "test v1\n"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("short key: %v, want InvalidArgument", err)
	}
}
