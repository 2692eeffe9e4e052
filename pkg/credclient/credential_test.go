package credclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// TestCredentialNeverPrintsItsSecret: every way a caller might log the
// public Credential type (fmt verbs, JSON, slog, logrus JSON) hides Secret.
func TestCredentialNeverPrintsItsSecret(t *testing.T) {
	const canary = "CANARY-credclient-77e1"
	c := Credential{Username: "AWS", Secret: canary, ExpiresAt: time.Unix(1_800_000_000, 0), Ref: "b9ref-x", Source: "annotation a"}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		outs = append(outs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c), fmt.Sprintf(verb, []Credential{c}))
	}
	b, err := json.Marshal(map[string]any{"cred": c, "ptr": &c})
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(b))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "cred", c)
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	l.WithField("cred", c).Info("x")
	outs = append(outs, buf.String())
	for _, o := range outs {
		if strings.Contains(o, canary) {
			t.Fatalf("secret printed: %s", o)
		}
	}
	if !strings.Contains(string(b), `"username":"AWS"`) || !strings.Contains(string(b), redacted) {
		t.Fatalf("JSON lost the non-secret fields: %s", b)
	}
}
