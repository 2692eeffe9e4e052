package gcp

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// maxKeyBytes bounds a key file; real keys are ~2.4 KiB.
const maxKeyBytes = 64 << 10

// saKey is the part of a service-account key checked before use.
type saKey struct {
	Type        string `json:"type"`
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
	TokenURI    string `json:"token_uri"`
}

// keyJSON reads GOOGLE_APPLICATION_CREDENTIALS: key JSON, its base64, or
// a path under an allowed directory. Errors name the field, never the value.
func (p *Provider) keyJSON(doc document.Document) ([]byte, error) {
	field := "credentials." + document.KeyGoogleAppCreds
	bad := func(format string, args ...any) error {
		return &document.Error{Source: doc.Source, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	v := strings.TrimSpace(doc.Get(document.KeyGoogleAppCreds).Reveal())
	var data []byte
	switch {
	case strings.HasPrefix(v, "{"):
		data = []byte(v)
	case strings.HasPrefix(v, "/"):
		b, err := p.readKeyFile(v)
		if err != nil {
			return nil, bad("%s", err)
		}
		data = b
	default:
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(v); err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
				data = b
				break
			}
		}
		if data == nil {
			return nil, bad("neither service-account key JSON, its base64, nor an absolute path to a key file")
		}
	}
	if err := checkKey(data, p.tokenURIOK); err != nil {
		return nil, bad("%s", err)
	}
	return data, nil
}

// readKeyFile reads a key file if it lies under an allowed directory once
// symlinks are resolved, so a link cannot point the node at its own key.
func (p *Provider) readKeyFile(path string) ([]byte, error) {
	if len(p.keyDirs) == 0 {
		return nil, errors.New("names a file on the node, and this node does not read key files named by documents")
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(path))
	if err != nil {
		return nil, errors.New("names a key file that cannot be read")
	}
	if !p.underKeyDir(real) {
		return nil, errors.New("names a file outside the directories this node allows for key files")
	}
	// Open without following a link and without blocking (a FIFO), then
	// check what was opened: a path component swapped for a link since
	// the check above must not reach the node's own files.
	fd, err := unix.Open(real, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.New("names a key file that cannot be read")
	}
	f := os.NewFile(uintptr(fd), real)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, errors.New("names something that is not a regular key file")
	}
	if opened, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil || !p.underKeyDir(opened) {
		return nil, errors.New("names a file outside the directories this node allows for key files")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyBytes+1))
	if err != nil || len(b) > maxKeyBytes {
		return nil, errors.New("names a key file that cannot be read or is too large")
	}
	return b, nil
}

// underKeyDir reports whether the resolved path lies under an allowed
// key directory (itself resolved).
func (p *Provider) underKeyDir(real string) bool {
	for _, d := range p.keyDirs {
		rd, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(rd, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
			return true
		}
	}
	return false
}

// checkKey validates a key before oauth2 sees it: oauth2's JSON errors
// quote the offending character, which would be part of the key.
func checkKey(data []byte, tokenURIOK func(*url.URL) bool) error {
	var k saKey
	if err := json.Unmarshal(data, &k); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return fmt.Errorf("key JSON is malformed at byte %d", syn.Offset)
		}
		return errors.New("key JSON does not have the shape of a service-account key")
	}
	if k.Type != "service_account" {
		// external_account and impersonation configs can make the node read
		// files, run programs or call arbitrary URLs on a tenant's behalf.
		// Never quote the value: whatever sits in a key's fields may be
		// (part of) a secret pasted into the wrong place.
		return errors.New("key's type is not accepted (only service_account keys)")
	}
	if k.ClientEmail == "" || k.PrivateKey == "" {
		return errors.New("key lacks client_email or private_key")
	}
	block, _ := pem.Decode([]byte(k.PrivateKey))
	if block == nil {
		return errors.New("key's private_key is not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return errors.New("key's private_key is not an RSA key")
		}
	}
	if k.TokenURI != "" {
		u, err := url.Parse(k.TokenURI)
		if err != nil || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !tokenURIOK(u) {
			return errors.New("key's token_uri is not a token endpoint this node allows")
		}
	}
	return nil
}
