package resolver

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// Errors callers can test. A basic registry and no credential for it:
// unauthenticated and containerd's docker.ErrInvalidAuthorization, like a
// rejected credential. A registry refusing a token (insufficient_scope)
// or a credential: a *RefusedError naming host, code and source, whose
// class callers read with errors.As.
func TestTypedErrors(t *testing.T) {
	ctx, logs := testContext(t)
	basic := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", alicePass))
	bimg := basic.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	err := pull(ctx, mustNew(t).Hosts(Anonymous), bimg.Ref, newStore(t))
	if !errors.Is(err, docker.ErrInvalidAuthorization) || !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "none apply") {
		t.Errorf("no credentials for a basic challenge: %v; want unauthenticated and docker.ErrInvalidAuthorization", err)
	}

	token := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", alicePass, "alice/app"), registrytest.WithUser("bob", bobPass, "bob/app"))
	timg := token.PushRandomImage(t, "bob/app", "v1", "bob", bobPass)
	kc := keychaintest.New(t)
	defer kc.Close()
	err = pull(ctx, mustNew(t).Hosts(FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))), timg.Ref, newStore(t))
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("alice pulling bob's image: %v; want a *RefusedError", err)
	}
	if refused.Host != token.Host || refused.Code != CodeInsufficientScope || refused.Scheme != "bearer" ||
		!strings.Contains(refused.Source, "image-credentials.test0") || !errdefs.IsPermissionDenied(err) || !errors.Is(err, docker.ErrInvalidAuthorization) {
		t.Errorf("refusal %+v (%v): want host %s, insufficient_scope, bearer, the document's source, permission denied", refused, err, token.Host)
	}

	basic.SetPassword(t, "alice", "rotated")
	err = pull(ctx, mustNew(t).Hosts(FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))), bimg.Ref, newStore(t))
	if !errors.As(err, &refused) || refused.Code != "" || refused.Scheme != "basic" || !errdefs.IsUnauthorized(err) {
		t.Errorf("rotated basic password: %v (%+v); want an unauthenticated basic *RefusedError", err, refused)
	}
	noCanary(t, logs.String())
}

// A refused credential is named by its source and provider, never by a
// value of its document: neither the error nor a log line (at trace
// level) quotes the username, raw or escaped.
func TestRefusalsQuoteNoDocumentValue(t *testing.T) {
	ctx, logs := testContext(t)
	const user = "q7user-canary-z9"
	token := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("bob", bobPass, "bob/app"))
	img := token.PushRandomImage(t, "bob/app", "v1", "bob", bobPass)
	basic := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("bob", bobPass))
	bimg := basic.PushRandomImage(t, "bob/app", "v1", "bob", bobPass)
	kc := keychaintest.New(t)
	defer kc.Close()
	for _, ref := range []string{img.Ref, bimg.Ref} {
		err := pull(ctx, mustNew(t).Hosts(FromKeychain(kc, docs(t, [3]string{"", user, "wrong-password"}))), ref, newStore(t))
		if err == nil {
			t.Fatalf("%s: a wrong password pulled", ref)
		}
		if !strings.Contains(err.Error(), "image-credentials.test0") {
			t.Errorf("%s: %v does not name the document's source", ref, err)
		}
		for _, text := range []string{err.Error(), logs.String()} {
			if strings.Contains(text, user) || strings.Contains(text, strings.ReplaceAll(user, "-", `\u002d`)) {
				t.Errorf("%s: the username is quoted:\n%s", ref, text)
			}
		}
	}
}
