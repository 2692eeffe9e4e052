package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

const canary = "CANARY-s3cr3t-7f2e"

type holder struct {
	User string
	Pass Secret
	Ptr  *Secret
}

func TestSecretNeverFormats(t *testing.T) {
	s := New(canary)
	h := holder{User: "u", Pass: s, Ptr: &s}
	cases := map[string]string{
		"%v":        fmt.Sprintf("%v", s),
		"%+v":       fmt.Sprintf("%+v", s),
		"%#v":       fmt.Sprintf("%#v", s),
		"%s":        fmt.Sprintf("%s", s),
		"%q":        fmt.Sprintf("%q", s),
		"%x":        fmt.Sprintf("%x", s),
		"struct %v": fmt.Sprintf("%v", h),
		"struct+v":  fmt.Sprintf("%+v", h),
		"struct#v":  fmt.Sprintf("%#v", h),
		"ptr %v":    fmt.Sprintf("%v", &s),
		"String":    s.String(),
	}
	for name, out := range cases {
		if strings.Contains(out, canary) {
			t.Errorf("%s leaked the secret: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s = %q, want it to say %s", name, out, Redacted)
		}
	}
}

func TestSecretEncodings(t *testing.T) {
	s := New(canary)
	b, err := json.Marshal(holder{Pass: s, Ptr: &s})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(canary)) || !bytes.Contains(b, []byte(Redacted)) {
		t.Fatalf("json = %s", b)
	}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s, "holder", holder{Pass: s})
	if strings.Contains(buf.String(), canary) {
		t.Fatalf("slog leaked: %s", buf.String())
	}

	buf.Reset()
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	logrus.NewEntry(l).WithField("secret", s).WithField("holder", holder{Pass: s}).Error("x")
	l.SetFormatter(&logrus.TextFormatter{})
	logrus.NewEntry(l).WithField("secret", s).Error("x")
	if strings.Contains(buf.String(), canary) || !strings.Contains(buf.String(), Redacted) {
		t.Fatalf("logrus: %s", buf.String())
	}
}

func TestReveal(t *testing.T) {
	s := New(canary)
	if s.Reveal() != canary || s.IsZero() || s.Len() != len(canary) {
		t.Fatal("Reveal/IsZero/Len disagree with the value")
	}
	if !New("").IsZero() || RandomFingerprinter().Secret(New("")) != "" {
		t.Fatal("empty secret")
	}
	if !s.Equal(New(canary)) || s.Equal(New("other")) {
		t.Fatal("Equal")
	}
}

// Hash is the full sha256, for keys.
func TestHash(t *testing.T) {
	h := Hash("a", "b")
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Fatalf("hash form %q", h)
	}
	if Hash("ab", "c") == Hash("a", "bc") || Hash("a") == Hash("a", "") {
		t.Fatal("parts are not separated")
	}
}
