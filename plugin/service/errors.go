package service

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteserrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/resolver"
)

// errNoMoreCandidates is returned when every credential source for a host
// was offered and rejected.
var errNoMoreCandidates = fmt.Errorf("every credential source for the host was rejected: %w", errdefs.ErrUnauthenticated)

// class returns the errdefs class of a pull failure: what the registry
// answered (through containerd's resolver, or in the text of containerd's
// CRI error when forwarding), or the class the error already carries.
func class(err error) error {
	var unexpected remoteserrors.ErrUnexpectedStatus
	switch {
	case errdefs.IsInvalidArgument(err):
		return errdefs.ErrInvalidArgument
	case errors.As(err, &unexpected):
		return resolver.StatusClass(unexpected.StatusCode)
	case errors.Is(err, docker.ErrInvalidAuthorization):
		// "insufficient_scope": the registry knows the caller, who may not
		// pull this repository.
		if strings.Contains(err.Error(), "insufficient_scope") {
			return errdefs.ErrPermissionDenied
		}
		return errdefs.ErrUnauthenticated
	case errdefs.IsUnauthorized(err):
		return errdefs.ErrUnauthenticated
	case errdefs.IsPermissionDenied(err):
		return errdefs.ErrPermissionDenied
	case errdefs.IsNotFound(err):
		return errdefs.ErrNotFound
	case errdefs.IsUnavailable(err):
		return errdefs.ErrUnavailable
	case errdefs.IsResourceExhausted(err):
		return errdefs.ErrResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() != codes.Unknown {
			return errgrpc.ToNative(err)
		}
		return classOfText(st.Message())
	}
	return errdefs.ErrUnknown
}

// classOfText reads containerd's CRI error text (forward mode), which
// arrives as codes.Unknown: its resolver's errors are not errdefs classes.
// The phrases are containerd's own (core/remotes) and net/http's status
// texts; the more specific ones are tried first.
func classOfText(msg string) error {
	for _, r := range []struct {
		phrase string
		class  error
	}{
		{"insufficient_scope", errdefs.ErrPermissionDenied},
		{"403 Forbidden", errdefs.ErrPermissionDenied},
		{"401 Unauthorized", errdefs.ErrUnauthenticated},
		{"no basic auth credentials", errdefs.ErrUnauthenticated},
		{"authorization failed", errdefs.ErrUnauthenticated},
		{"404 Not Found", errdefs.ErrNotFound},
		{": not found", errdefs.ErrNotFound},
		{"429 Too Many Requests", errdefs.ErrResourceExhausted},
	} {
		if strings.Contains(msg, r.phrase) {
			return r.class
		}
	}
	return errdefs.ErrUnknown
}

// rejected reports a registry refusing the credential presented, the case
// where isolation "fallback" tries the next source.
func rejected(err error) bool {
	c := class(err)
	return errors.Is(c, errdefs.ErrUnauthenticated) || errors.Is(c, errdefs.ErrPermissionDenied)
}

// pullStatus is the gRPC status PullImage returns for err: the class's
// code, and a message naming the image, the registry host and where the
// credential came from — never the credential. Text from elsewhere is
// scrubbed of every secret the pull touched.
func pullStatus(err error, ref registry.Reference, pa *pullAuth) error {
	c := class(err)
	if errdefs.IsPermissionDenied(c) && pa != nil {
		// A registry refusing an anonymous caller (a token with no access,
		// "insufficient_scope") is asking for credentials: the caller is
		// not authenticated, not denied.
		if u, ok := pa.presentedTo(ref.Registry.Host); ok && u.cred.Anonymous {
			c = errdefs.ErrUnauthenticated
		}
	}
	cause := err.Error()
	if st, ok := status.FromError(err); ok {
		// containerd's CRI answer (forward mode): its text, not the
		// "rpc error: code = ..." wrapping.
		cause = st.Message()
	}
	var msg string
	if errdefs.IsInvalidArgument(c) || pa == nil {
		msg = fmt.Sprintf("pull %s: %s", ref, cause)
	} else {
		msg = fmt.Sprintf("pull %s from %s %s: %s", ref, ref.Registry.Host, describeCredential(pa, ref.Registry.Host), cause)
	}
	if pa != nil {
		msg = pa.scrub(msg)
	}
	return errgrpc.ToGRPC(withMessage(c, msg))
}

func describeCredential(pa *pullAuth, host string) string {
	u, ok := pa.presentedTo(host)
	switch {
	case !ok:
		return "(no credential resolved)"
	case u.cred.Anonymous && u.cred.Source == "none":
		return "anonymously (no credential for this host)"
	case u.cred.Anonymous:
		return fmt.Sprintf("anonymously (public document from %s)", u.cred.Source)
	}
	return fmt.Sprintf("with %s credential from %s", u.cred.Provider, u.cred.Source)
}

// withMessage gives an errdefs class a message of our own, so the gRPC
// status carries it without a ": unauthenticated" tail.
func withMessage(c error, msg string) error {
	if m, ok := c.(interface{ WithMessage(string) error }); ok {
		return m.WithMessage(msg)
	}
	return fmt.Errorf("%s: %w", msg, c)
}
