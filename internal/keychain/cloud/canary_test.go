package cloud

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/canarydoc"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

// No error quotes a value read from a credential document. A canary is
// planted in every value position of every document type and form (see
// canarydoc); each case is parsed from the pod's annotations and every
// document is resolved by its provider against the cloud emulators, for
// its own registry kind and another. Every error, and everything logged,
// is searched for the canary raw, case-folded, URL-encoded, JSON-escaped
// and in base64.
func TestNoErrorQuotesADocumentValue(t *testing.T) {
	logs := cloudemu.CaptureLogs(t)
	env := canarydoc.Start(t)
	det, err := registry.NewDetector(env.Mappings)
	if err != nil {
		t.Fatal(err)
	}
	kc := keychaintest.New(t, env.KeychainOptions...)
	defer kc.Close()

	cases := env.Cases()
	var parseErrs, resolveErrs, resolved int
	check := func(c canarydoc.Case, stage string, err error) {
		t.Helper()
		for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err)} {
			if form := canarydoc.Find(text); form != "" {
				t.Errorf("%s: %s error shows the planted value (%s):\n%s", c.Name, stage, form, text)
				return
			}
		}
	}
	for _, c := range cases {
		host, err := registry.NormalizeHost(c.Host)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := document.FromAnnotations(c.Annotations, document.DefaultAnnotationPrefix, host)
		if err != nil {
			parseErrs++
			check(c, "parse", err)
			continue
		}
		reg := det.Detect(host)
		for _, d := range docs {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			_, err := kc.Resolve(ctx, reg, d)
			cancel()
			if err != nil {
				resolveErrs++
				check(c, "resolve", err)
			} else {
				resolved++
			}
		}
	}
	t.Logf("%d cases: %d refused by the parser, %d by a provider, %d resolved", len(cases), parseErrs, resolveErrs, resolved)
	// The matrix reaches both stages: a change that made every document
	// fail early (or none fail) would search far less than it claims.
	if parseErrs < 100 || resolveErrs < 100 {
		t.Errorf("the cases produced %d parse and %d provider errors; the matrix no longer reaches the providers", parseErrs, resolveErrs)
	}
	if form := canarydoc.Find(logs.String()); form != "" {
		t.Errorf("the logs show a planted value (%s)", form)
	}
}
