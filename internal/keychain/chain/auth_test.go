package chain

import (
	"encoding/base64"
	"strings"
	"testing"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// One decoder for every docker "auth" field (config.json and
// PullImageRequest.auth), accepting what docker and go-containerregistry
// accept.
func TestDecodeDockerAuth(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		user, pass string
		bad        string
	}{
		{name: "padded", in: base64.StdEncoding.EncodeToString([]byte("u:p")), user: "u", pass: "p"},
		{name: "unpadded", in: base64.RawStdEncoding.EncodeToString([]byte("u:p")), user: "u", pass: "p"},
		{name: "password with colons", in: base64.RawStdEncoding.EncodeToString([]byte("u:a:b:" + canaryPass)), user: "u", pass: "a:b:" + canaryPass},
		{name: "surrounding space", in: " " + base64.StdEncoding.EncodeToString([]byte("u:p")) + "\n", user: "u", pass: "p"},
		{name: "NUL-padded password", in: base64.StdEncoding.EncodeToString([]byte("u:p\x00\x00")), user: "u", pass: "p"},
		{name: "not base64", in: "!!" + canaryPass, bad: "not base64"},
		{name: "no colon", in: base64.StdEncoding.EncodeToString([]byte(canaryPass)), bad: "not username:password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, p, err := DecodeDockerAuth("src", tc.in)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) || strings.Contains(err.Error(), canaryPass) {
					t.Fatalf("got %q %q %v; want an error saying %q without the value", u, p, err, tc.bad)
				}
				return
			}
			if err != nil || u != tc.user || p != tc.pass {
				t.Fatalf("got %q %q %v; want %q %q", u, p, err, tc.user, tc.pass)
			}
		})
	}
	// Both callers use it: an unpadded auth in PullImageRequest.auth works.
	c, err := FromAuthConfig(&runtime.AuthConfig{Auth: base64.RawStdEncoding.EncodeToString([]byte("robot:pw1"))}, "reg.example", nil)
	if err != nil || c == nil || c.Doc.Get(document.KeyUsername).Reveal() != "robot" || c.Doc.Get(document.KeyPassword).Reveal() != "pw1" {
		t.Fatalf("unpadded request auth: %+v %v", c, err)
	}
}
