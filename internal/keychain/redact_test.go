package keychain

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// What a remote API echoes of a document (AAD's "Tenant '<id>' not
// found") is cut from the message in every rendering, the error's class
// survives, and a value that is part of the host is left alone.
func TestRedactDocument(t *testing.T) {
	doc := mustDoc(t, `{"type":"basic","credentials":{"USERNAME":"tenant-q7","PASSWORD":" p@ss/word+`+canary+`\n"}}`, "")
	pw := "p@ss/word+" + canary
	inner := fmt.Errorf("remote said: user 'tenant-q7' with %s and %s and %s on reg.example.com: %w",
		url.PathEscape(pw), url.QueryEscape(pw), pw, errdefs.ErrUnauthenticated)
	err := redactDocument(inner, doc, "reg.example.com")
	for _, leak := range []string{"tenant-q7", canary} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("message still shows %q: %s", leak, err)
		}
	}
	if !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "reg.example.com") {
		t.Errorf("class or host lost: %v", err)
	}
	if redactDocument(errdefs.ErrNotFound, doc, "") != errdefs.ErrNotFound || redactDocument(nil, doc, "") != nil {
		t.Error("an error without document values is not returned as it is")
	}
	hostDoc := mustDoc(t, `{"type":"basic","credentials":{"USERNAME":"reg.example","PASSWORD":"pw-long"}}`, "")
	if e := redactDocument(errors.New("no reg.example.com"), hostDoc, "reg.example.com"); e.Error() != "no reg.example.com" {
		t.Errorf("a value inside the host was cut: %v", e)
	}
}
