package chain

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Canary secrets: a test fails if one shows up where it must not.
const (
	canaryPass  = "canary-pass-7f3a9c"
	canaryToken = "canary-token-2b8e4d"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// helperOnPath installs an executable docker-credential-<name> script and
// puts its folder first on PATH.
func helperOnPath(t *testing.T, name, script string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "docker-credential-"+name), script)
	if err := os.Chmod(filepath.Join(dir, "docker-credential-"+name), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return dir
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
