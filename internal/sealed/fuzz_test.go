package sealed

import (
	"errors"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/containerd/errdefs"
)

// fuzzIdentity is fixed so the seed corpus holds values it opens.
const fuzzIdentity = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"

// wantClass fails unless err is one of the classes a sealed value may
// fail with, names the source, and quotes nothing of the input.
func wantClass(t *testing.T, err error, input string) {
	t.Helper()
	if !errdefs.IsInvalidArgument(err) && !errdefs.IsFailedPrecondition(err) && !errdefs.IsPermissionDenied(err) {
		t.Fatalf("error %v has no InvalidArgument/FailedPrecondition/PermissionDenied class", err)
	}
	if !strings.Contains(err.Error(), "annotation k") {
		t.Fatalf("error %q does not name the source", err)
	}
	for _, v := range candidateValues(input) {
		if strings.Contains(err.Error(), v) {
			t.Fatalf("error %q echoes input %q", err, v)
		}
	}
}

// candidateValues are the runs of the input long and odd enough that
// finding one in a message means it was quoted.
func candidateValues(input string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(input, func(r rune) bool { return strings.ContainsRune(`"{}[],: `, r) }) {
		if len(f) >= 16 && f != strings.ToLower(f) {
			out = append(out, f)
		}
	}
	return out
}

// FuzzOpen feeds annotation values to the node's opener: no panic, only
// the sealed classes, never an echo.
func FuzzOpen(f *testing.F) {
	id, err := age.ParseX25519Identity(fuzzIdentity)
	if err != nil {
		f.Fatal(err)
	}
	good, err := Seal(`{"USERNAME":"robot","PASSWORD":"CANARY-Fuzz-0123456789"}`, []string{id.Recipient().String()}, "team-a", time.Time{})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, good[:len(good)/2], "age:", "age:!!", "age:YWdlLWVuY3J5cHRpb24ub3JnL3YxCg==", strings.Replace(good, "A", "B", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		env, err := Open("annotation k", value, []age.Identity{id})
		if err != nil {
			wantClass(t, err, value)
			return
		}
		if env.Namespace == "" || env.Document == "" {
			t.Fatalf("opened an envelope without namespace or document")
		}
	})
}

// FuzzEnvelope feeds plaintexts to the envelope parser and its checks.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"namespace":"team-a","document":"u:p"}`,
		`{"v":1,"namespace":"team-a","document":{"USERNAME":"u","PASSWORD":"p"},"not_after":"2026-12-01T00:00:00Z"}`,
		`{"v":1,"namespace":"team-a","document":[{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"t"}}]}`,
		`{"v":2}`, `{"v":1,"namespace":"A"}`, `{`, `[]`, `null`, `{"v":1,"namespace":"team-a","document":"u:p"}x`,
	} {
		f.Add([]byte(s), "team-a")
	}
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, plain []byte, ns string) {
		env, err := parseEnvelope("annotation k", plain)
		if err != nil {
			wantClass(t, err, string(plain))
			return
		}
		if checkNamespace(env.Namespace) != nil || env.Document == "" {
			t.Fatalf("accepted a bad envelope")
		}
		if err := env.Check("annotation k", ns, now); err != nil {
			var class = errdefs.IsPermissionDenied(err) || errdefs.IsInvalidArgument(err)
			if !class || errors.Is(err, errdefs.ErrUnknown) {
				t.Fatalf("check: %v", err)
			}
			if ns != env.Namespace && strings.Contains(err.Error(), env.Namespace+" ") {
				t.Fatalf("check names the sealed namespace: %v", err)
			}
		} else if ns != env.Namespace {
			t.Fatalf("accepted namespace %q for %q", ns, env.Namespace)
		}
	})
}
