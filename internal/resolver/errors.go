package resolver

import (
	"fmt"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// OAuth2 / registry token error codes a challenge's error= may carry.
const (
	// CodeInsufficientScope: the registry knows the caller, who may not
	// do this (pull this repository).
	CodeInsufficientScope = "insufficient_scope"
	// CodeInvalidToken: the token presented is expired, revoked or bad.
	CodeInvalidToken = "invalid_token"
)

// RefusedError is a registry refusing what a pull presented, after the
// one retry with a fresh token or credential: the registry host, the
// challenge's error code (CodeInsufficientScope, CodeInvalidToken, "" when
// it gave none), the scheme, and where the credential came from. It wraps
// its errdefs class — permission denied for insufficient_scope,
// unauthenticated otherwise — and containerd's docker.ErrInvalidAuthorization,
// so callers classify it with errors.As / errors.Is, never by its text.
type RefusedError struct {
	Host   string
	Code   string
	Scheme string // "basic" or "bearer"
	Source string
}

func (e *RefusedError) Error() string {
	reason := ""
	if e.Code != "" {
		reason = " (" + keychain.OneLine(e.Code, 64) + ")"
	}
	what, retried := "the credentials", "after they were resolved again"
	if e.Scheme == schemeBearer.String() {
		what, retried = "the token minted with the credentials", "with a fresh token"
	}
	return fmt.Sprintf("registry %s rejected %s from %s%s, and again %s", e.Host, what, e.Source, reason, retried)
}

// Class is the errdefs class of the refusal.
func (e *RefusedError) Class() error {
	if e.Code == CodeInsufficientScope {
		return errdefs.ErrPermissionDenied
	}
	return errdefs.ErrUnauthenticated
}

func (e *RefusedError) Unwrap() []error { return []error{e.Class(), docker.ErrInvalidAuthorization} }
