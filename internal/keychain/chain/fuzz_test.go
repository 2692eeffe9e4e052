package chain

import (
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecodeDockerAuth: any "auth" value decodes or is refused with an
// error that never quotes it; a decoded pair re-encodes (padded or not)
// to an equivalent value.
func FuzzDecodeDockerAuth(f *testing.F) {
	for _, s := range []string{b64("u:p"), base64.RawStdEncoding.EncodeToString([]byte("u:p:q")), "!!", "", "=", "dTpw\n", b64("u:p\x00")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, auth string) {
		u, p, err := DecodeDockerAuth("src", auth)
		if err != nil {
			if len(auth) >= 4 && strings.Contains(err.Error(), auth) {
				t.Fatalf("error quotes the value: %v", err)
			}
			return
		}
		u2, p2, err := DecodeDockerAuth("src", base64.RawStdEncoding.EncodeToString([]byte(u+":"+p)))
		if err != nil || u2 != u || p2 != strings.Trim(p, "\x00") {
			t.Fatalf("round trip of %q:%q: %q:%q %v", u, p, u2, p2, err)
		}
	})
}

// FuzzDockerConfig: any config.json content gives a candidate, nothing, or
// an error that never quotes the file's content; never a crash.
func FuzzDockerConfig(f *testing.F) {
	f.Add(`{"auths":{"reg.example":{"auth":"`+b64("u:p")+`"}}}`, "reg.example")
	f.Add(`{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"},"docker.io":{"identitytoken":"t"}}}`, "docker.io")
	f.Add(`{"auths":{"x":"`, "x")
	// A fuzzed credsStore names a helper to run: none is on this PATH.
	f.Setenv("PATH", f.TempDir())
	f.Fuzz(func(t *testing.T, content, host string) {
		path := filepath.Join(t.TempDir(), "config.json")
		writeFile(t, path, content)
		_, _, err := DockerConfig{Path: path, Label: "docker_config"}.Lookup(t.Context(), Query{Host: host, ImageHost: host})
		if err != nil && len(content) >= 8 && strings.Contains(err.Error(), content) {
			t.Fatalf("error quotes the file: %v", err)
		}
	})
}
