package keychain

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
)

// TokenEndpointError describes an OAuth2 token endpoint's error answer
// (RFC 6749 §5.2) the same way for every provider: the API, the HTTP
// status, the endpoint's error code and description (bounded, one line;
// never the request, which carries the secret), classified for errdefs.
// issuer names who answered ("Google", "Azure AD") and credential what it
// judged ("the service-account key").
func TokenEndpointError(api string, attempts, status int, oauthCode, desc, issuer, credential string) error {
	what := fmt.Sprintf("HTTP %d", status)
	if oauthCode != "" {
		what += " " + OneLine(oauthCode, 60)
	}
	if desc != "" {
		what += ": " + OneLine(desc, 200)
	}
	switch {
	case status == http.StatusTooManyRequests:
		return fmt.Errorf("%s throttled (%d attempts): %s: %w", api, attempts, what, errdefs.ErrUnavailable)
	case status >= 500:
		return fmt.Errorf("%s unavailable (%d attempts): %s: %w", api, attempts, what, errdefs.ErrUnavailable)
	case status == http.StatusForbidden:
		return fmt.Errorf("%s: %s denied %s: %s: %w", api, issuer, credential, what, errdefs.ErrPermissionDenied)
	case status == http.StatusBadRequest || status == http.StatusUnauthorized:
		return fmt.Errorf("%s: %s refused %s: %s: %w", api, issuer, credential, what, errdefs.ErrUnauthenticated)
	}
	return fmt.Errorf("%s failed: %s: %w", api, what, errdefs.ErrUnknown)
}

// OneLine folds whitespace and bounds s to n bytes, for quoting what a
// remote endpoint said inside an error.
func OneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
