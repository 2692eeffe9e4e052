package chain

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

func mustDocs(t *testing.T, source, text, host string) []document.Document {
	t.Helper()
	d, err := document.Parse(source, text, host)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func basicDoc(reg, user string) string {
	if reg != "" {
		reg = fmt.Sprintf(`"registry":%q,`, reg)
	}
	return fmt.Sprintf(`{%s"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":"pw"}}`, reg, user)
}

// The precedence chain, table-driven: for each host, which source's
// candidate wins, and the order of the rest behind it.
func TestChainOrder(t *testing.T) {
	const image = "img.example"
	ann, err := document.FromAnnotations(map[string]string{
		"b9.beam.cloud/image-credentials":          basicDoc("", "ann-unnamed"),
		"b9.beam.cloud/image-credentials.b-second": basicDoc("both.example", "ann-named-b"),
		"b9.beam.cloud/image-credentials.a-first":  basicDoc("both.example", "ann-named-a"),
		"b9.beam.cloud/image-credentials.mirror":   basicDoc("mirror.example", "ann-mirror"),
	}, "", image)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := FromAuthConfig(&runtime.AuthConfig{Username: "req-auth", Password: "pw"}, image, nil)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := FromAuthConfig(&runtime.AuthConfig{Username: "req-pinned", Password: "pw", ServerAddress: "https://pinned.example"}, image, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodeDocs, err := document.AsNode(mustDocs(t, "node", `[`+basicDoc("both.example", "node-doc")+`,`+basicDoc("nodeonly.example", "node-doc")+`]`, ""))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "doc.json")
	writeFile(t, file, basicDoc("file.example", "node-file"))
	cfg := filepath.Join(dir, "config.json")
	writeFile(t, cfg, fmt.Sprintf(`{"auths":{"file.example":{"auth":%q},"docker.only":{"auth":%q},"img.example":{"auth":%q}}}`,
		b64("docker-config:pw"), b64("docker-config:pw"), b64("docker-config:pw")))
	node := Chain{
		Documents{Tier: TierNode, Docs: nodeDocs},
		DocumentFiles{Paths: []string{file, filepath.Join(dir, "missing.json")}, Label: "files"},
		DockerConfig{Path: cfg, Label: "docker"},
	}
	withAuth := func(a *Candidate) Chain {
		return append(Chain{Documents{Tier: TierAnnotation, Docs: ann}, Auth{Candidate: a}}, node...)
	}

	for _, tc := range []struct {
		name  string
		chain Chain
		host  string
		want  []string // usernames of the candidates, in order
	}{
		{"image host: unnamed annotation, request auth, docker config", withAuth(auth), image, []string{"ann-unnamed", "req-auth", "docker-config"}},
		{"named annotations in name order, then the node's", withAuth(auth), "both.example", []string{"ann-named-a", "node-doc"}},
		{"a mirror gets only what names it", withAuth(auth), "mirror.example", []string{"ann-mirror"}},
		{"auth pinned by server_address", withAuth(pinned), "pinned.example", []string{"req-pinned"}},
		{"pinned auth is not the image's", withAuth(pinned), image, []string{"ann-unnamed", "docker-config"}},
		{"node document", withAuth(nil), "nodeonly.example", []string{"node-doc"}},
		{"document file before docker config", withAuth(nil), "file.example", []string{"node-file", "docker-config"}},
		{"docker config alone", withAuth(nil), "docker.only", []string{"docker-config"}},
		{"nobody's host", withAuth(auth), "none.example", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := tc.chain.For(Query{Host: tc.host, ImageHost: image})
			var got []string
			for i := 0; ; i++ {
				c, ok, err := cs.At(ctxT(t), i)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				wantTier := TierNode
				switch c.Doc.Source {
				case SourceAuth:
					wantTier = TierAuth
				default:
					if len(c.Doc.Source) > 10 && c.Doc.Source[:10] == "annotation" {
						wantTier = TierAnnotation
					}
				}
				if c.Tier != wantTier {
					t.Errorf("candidate %d from %s: tier %v, want %v", i, c.Doc.Source, c.Tier, wantTier)
				}
				got = append(got, c.Doc.Get(document.KeyUsername).Reveal())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("candidates %v, want %v", got, tc.want)
			}
		})
	}
}

// counting is a source that counts its lookups.
type counting struct {
	n *int
	c Candidate
}

func (s counting) Lookup(context.Context, Query) (Candidate, bool, error) {
	*s.n++
	return s.c, true, nil
}

// Walk: the first candidate that resolves wins; strict tries only the
// first; a public document never falls back; later sources are not looked
// up while an earlier one serves.
func TestWalk(t *testing.T) {
	const host = "reg.example"
	reg := registry.Detect(host)
	kc := keychaintest.New(t)
	t.Cleanup(kc.Close)
	doc := func(text string) Candidate {
		return Candidate{Tier: TierAnnotation, Doc: mustDocs(t, "annotation x", text, host)[0]}
	}
	// No provider for azure in a bare keychain: resolving it fails.
	broken := doc(`{"type":"azure","credentials":{"AZURE_CLIENT_ID":"id","AZURE_CLIENT_SECRET":"s"}}`)
	good := doc(basicDoc("", "good"))
	public := doc(`{"type":"public"}`)

	for _, tc := range []struct {
		name    string
		cands   []Candidate
		strict  bool
		want    string // username, "anonymous", or "error"
		lookups int    // of the last source
	}{
		{"first wins", []Candidate{good, broken}, false, "good", 0},
		{"fallback past a failure", []Candidate{broken, good}, false, "good", 1},
		{"strict: no fallback", []Candidate{broken, good}, true, "error", 0},
		{"public never falls back", []Candidate{public, good}, false, "anonymous", 0},
		{"nothing: anonymous", nil, false, "anonymous", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Chain
			n := 0
			for i, cand := range tc.cands {
				if i == len(tc.cands)-1 {
					c = append(c, counting{n: &n, c: cand})
				} else {
					c = append(c, Auth{Candidate: &cand})
				}
			}
			r, err := Walk(ctxT(t), kc, reg, c.For(Query{Host: host, ImageHost: host}), 0, tc.strict, nil)
			got := r.Cred.Username
			switch {
			case err != nil:
				got = "error"
			case r.Cred.Anonymous:
				got = "anonymous"
			}
			if got != tc.want || n != tc.lookups {
				t.Errorf("got %s (err %v) after %d lookups of the last source, want %s after %d", got, err, n, tc.want, tc.lookups)
			}
		})
	}
	// Past every candidate: exhausted, not anonymous.
	c := Chain{Auth{Candidate: &good}}
	if _, err := Walk(ctxT(t), kc, reg, c.For(Query{Host: host, ImageHost: host}), 1, false, nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("walk past the last candidate: %v, want ErrExhausted", err)
	}
}
