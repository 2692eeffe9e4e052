package sealedfile

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
)

// KeySize is the key size File needs (AES-256).
const KeySize = 32

// File is one sealed file.
type File struct {
	path  string
	magic string
	aead  cipher.AEAD
}

// New returns the sealed file at path, under key, whose contents start
// with magic (one line naming the format and its version, like
// "b9-image-access v1\n"). It touches nothing on disk.
func New(path string, key []byte, magic string) (*File, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealed file %s: key is %d bytes, want %d: %w", path, len(key), KeySize, errdefs.ErrInvalidArgument)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealed file %s: %w", path, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sealed file %s: %w", path, err)
	}
	return &File{path: path, magic: magic, aead: aead}, nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Save seals plain and replaces the file with it (0600).
func (f *File) Save(plain []byte) error {
	nonce := make([]byte, f.aead.NonceSize())
	// crypto/rand.Read never fails (it panics if the OS cannot give
	// randomness).
	_, _ = rand.Read(nonce)
	out := make([]byte, 0, len(f.magic)+len(nonce)+len(plain)+f.aead.Overhead())
	out = append(out, f.magic...)
	out = append(out, nonce...)
	out = f.aead.Seal(out, nonce, plain, []byte(f.magic))

	tmp, err := os.CreateTemp(filepath.Dir(f.path), "."+filepath.Base(f.path)+".*")
	if err != nil {
		return fmt.Errorf("sealed file %s: %w", f.path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	// CreateTemp makes 0600 files; say so rather than rely on it.
	cerr := tmp.Chmod(0o600)
	_, werr := tmp.Write(out)
	serr := tmp.Sync()
	if err := errors.Join(cerr, werr, serr, tmp.Close()); err != nil {
		return fmt.Errorf("sealed file %s: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("sealed file %s: %w", f.path, err)
	}
	return nil
}

// Load returns the file's plain contents, or nil when there is no file.
// A file that is not of this format or does not open under the key is
// ErrDataLoss; the caller decides whether to MoveAside and start afresh.
// The caller should clear the returned bytes once parsed.
func (f *File) Load() ([]byte, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sealed file %s: %w", f.path, err)
	}
	n := f.aead.NonceSize()
	if len(data) < len(f.magic)+n || !bytes.Equal(data[:len(f.magic)], []byte(f.magic)) {
		return nil, fmt.Errorf("sealed file %s: not a %q file: %w", f.path, bytes.TrimSpace([]byte(f.magic)), errdefs.ErrDataLoss)
	}
	nonce := data[len(f.magic) : len(f.magic)+n]
	plain, err := f.aead.Open(nil, nonce, data[len(f.magic)+n:], []byte(f.magic))
	if err != nil {
		return nil, fmt.Errorf("sealed file %s: does not decrypt with this key (key replaced or file corrupt): %w", f.path, errdefs.ErrDataLoss)
	}
	return plain, nil
}

// MoveAside renames an unreadable file to <path>.unreadable-<unix time>
// and returns the new name, so the next Save starts afresh without
// destroying what may still be recovered with the old key.
func (f *File) MoveAside() (string, error) {
	aside := f.path + ".unreadable-" + strconv.FormatInt(time.Now().Unix(), 10)
	if err := os.Rename(f.path, aside); err != nil {
		return "", fmt.Errorf("sealed file %s: %w", f.path, err)
	}
	return aside, nil
}
