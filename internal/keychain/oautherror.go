package keychain

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
)

// TokenEndpointError is an OAuth2 token endpoint's error answer (RFC 6749
// §5.2), described the same way for every provider: the API, the HTTP
// status, the endpoint's error code and description (bounded, one line;
// never the request, which carries the secret). It unwraps to its errdefs
// class: throttling and 5xx are Unavailable, 403 PermissionDenied, 400 and
// 401 Unauthenticated.
type TokenEndpointError struct {
	API      string // the call, as errors name it ("ECR GetAuthorizationToken")
	Attempts int
	Status   int    // HTTP status
	Code     string // the endpoint's "error"
	// Description is the endpoint's "error_description".
	Description string
	// Issuer names who answered ("Google", "Azure AD").
	Issuer string
	// Credential names what it judged ("the service-account key").
	Credential string
}

func (e *TokenEndpointError) Error() string {
	what := fmt.Sprintf("HTTP %d", e.Status)
	if e.Code != "" {
		what += " " + OneLine(e.Code, 60)
	}
	if e.Description != "" {
		what += ": " + OneLine(e.Description, 200)
	}
	switch e.Unwrap() {
	case errdefs.ErrUnavailable:
		verb := "unavailable"
		if e.Status == http.StatusTooManyRequests {
			verb = "throttled"
		}
		return fmt.Sprintf("%s %s (%d attempts): %s: %v", e.API, verb, e.Attempts, what, errdefs.ErrUnavailable)
	case errdefs.ErrPermissionDenied:
		return fmt.Sprintf("%s: %s denied %s: %s: %v", e.API, e.Issuer, e.Credential, what, errdefs.ErrPermissionDenied)
	case errdefs.ErrUnauthenticated:
		return fmt.Sprintf("%s: %s refused %s: %s: %v", e.API, e.Issuer, e.Credential, what, errdefs.ErrUnauthenticated)
	}
	return fmt.Sprintf("%s failed: %s: %v", e.API, what, errdefs.ErrUnknown)
}

// Unwrap is the errdefs class of the status.
func (e *TokenEndpointError) Unwrap() error {
	switch {
	case e.Status == http.StatusTooManyRequests || e.Status >= 500:
		return errdefs.ErrUnavailable
	case e.Status == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case e.Status == http.StatusBadRequest || e.Status == http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	}
	return errdefs.ErrUnknown
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
