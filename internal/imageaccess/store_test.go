package imageaccess

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func nodeKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// Records survive a restart in the sealed file, with the same Since and
// fingerprints; under another key the file is moved aside and the store
// starts empty.
func TestRecordsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(t.Context(), Config{Path: path, Key: nodeKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	since := s.Since()
	fp := s.Fingerprint("document", "identity-of-alice")
	k := Key{Repository: "reg.example/tenant/a", ImageID: "sha256:a"}
	s.Accepted(k, false, fp)
	s.Accepted(Key{Repository: "reg.example/public/p", ImageID: "sha256:p"}, true, "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "tenant") || strings.Contains(string(raw), fp) {
		t.Error("the records are readable in the file")
	}

	s, err = Open(t.Context(), Config{Path: path, Key: nodeKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, ok := s.Get(k)
	if !ok || rec.Open || !rec.Has(fp, 0, time.Time{}) || !s.Since().Equal(since) {
		t.Errorf("after a restart: record %+v %v, since %v (was %v)", rec, ok, s.Since(), since)
	}
	if s.Fingerprint("document", "identity-of-alice") != fp {
		t.Error("the fingerprint of the same credential changed across a restart")
	}
	if !s.OpenAnywhere("sha256:p") || s.OpenAnywhere("sha256:a") {
		t.Error("OpenAnywhere is wrong after a restart")
	}

	other, err := Open(t.Context(), Config{Path: path, Key: nodeKey(2)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, ok := other.Get(k); ok {
		t.Error("records opened under another key")
	}
	if other.Fingerprint("document", "identity-of-alice") == fp {
		t.Error("fingerprints do not depend on the key: anyone could compute them")
	}
	if m, _ := filepath.Glob(path + ".unreadable-*"); len(m) != 1 {
		t.Errorf("unreadable file not moved aside: %v", m)
	}
}

// Since is kept from the first start, even when no record was made.
func TestSinceIsKeptFromTheFirstStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(t.Context(), Config{Path: path, Key: nodeKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	since := s.Since()
	s.Close()
	time.Sleep(2 * time.Millisecond)
	s, err = Open(t.Context(), Config{Path: path, Key: nodeKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Since().Equal(since) {
		t.Errorf("Since moved from %v to %v across a restart with no records", since, s.Since())
	}
}

// A refused credential leaves the record; open stays open; TTL counts
// from the last acceptance; bounds evict the least recently verified.
func TestRecordRules(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(t.Context(), Config{MaxRecords: 2, MaxCredentials: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	k := Key{Repository: "r/a", ImageID: "sha256:a"}
	s.Accepted(k, false, "fp1")
	now = now.Add(time.Minute)
	s.Accepted(k, false, "fp2")
	rec, _ := s.Get(k)
	if !rec.Has("fp1", time.Hour, now) || rec.Has("fp1", 30*time.Second, now) || !rec.Has("fp1", 0, now) {
		t.Error("TTL does not count from the acceptance")
	}
	now = now.Add(time.Minute)
	s.Accepted(k, false, "fp3")
	if rec, _ = s.Get(k); rec.Has("fp1", 0, now) || !rec.Has("fp3", 0, now) {
		t.Errorf("credential bound: %v; want the oldest evicted", rec.Credentials)
	}
	s.Refused(k, "fp3")
	if rec, _ = s.Get(k); rec.Has("fp3", 0, now) || !rec.Has("fp2", 0, now) {
		t.Errorf("after refusing fp3: %v", rec.Credentials)
	}
	s.Accepted(k, true, "")
	s.Accepted(k, false, "fp4")
	if rec, _ = s.Get(k); !rec.Open {
		t.Error("open was taken back")
	}
	now = now.Add(time.Minute)
	s.Accepted(Key{Repository: "r/b", ImageID: "sha256:b"}, true, "")
	now = now.Add(time.Minute)
	s.Accepted(Key{Repository: "r/c", ImageID: "sha256:c"}, true, "")
	if _, ok := s.Get(k); ok {
		t.Error("record bound: the least recently verified record was kept")
	}
}

func TestAllowlist(t *testing.T) {
	a, err := NewAllowlist([]string{"reg.example/base/*", "docker.io/library/busybox"})
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]bool{
		"reg.example/base/img":       true,
		"reg.example/base/deep/img":  true,
		"reg.example/baseline/img":   false,
		"docker.io/library/busybox":  true,
		"docker.io/library/busybox2": false,
		"":                           false,
	} {
		if a.Match(repo) != want {
			t.Errorf("Match(%q) = %v, want %v", repo, !want, want)
		}
	}
	for _, bad := range []string{"busybox", "reg.example/app:v1", "reg.example/*/app", " reg.example/a", "/*", "reg.example/app@sha256:" + strings.Repeat("a", 64)} {
		if _, err := NewAllowlist([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
