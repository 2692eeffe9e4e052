package keychain

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestTokenEndpointError(t *testing.T) {
	for _, tc := range []struct {
		status int
		class  error
		says   string
	}{
		{429, errdefs.ErrUnavailable, "Token API throttled (3 attempts): HTTP 429 slow_down: wait a bit: unavailable"},
		{503, errdefs.ErrUnavailable, "Token API unavailable (3 attempts): HTTP 503 slow_down: wait"},
		{403, errdefs.ErrPermissionDenied, "Token API: Issuer denied the key: HTTP 403"},
		{400, errdefs.ErrUnauthenticated, "Token API: Issuer refused the key: HTTP 400"},
		{401, errdefs.ErrUnauthenticated, "Token API: Issuer refused the key: HTTP 401"},
		{418, errdefs.ErrUnknown, "Token API failed: HTTP 418"},
	} {
		err := error(&TokenEndpointError{API: "Token API", Attempts: 3, Status: tc.status, Code: "slow_down",
			Description: "wait\n  a bit", Issuer: "Issuer", Credential: "the key"})
		if !errors.Is(err, tc.class) {
			t.Errorf("%d: %v is not %v", tc.status, err, tc.class)
		}
		if !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%d: %q does not say %q on one line", tc.status, err, tc.says)
		}
	}
}
