package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteserrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/resolver"
)

// class returns the errdefs class of a pull failure: what the registry
// answered (through containerd's resolver, or in the text of containerd's
// CRI error when forwarding), or the class the error already carries.
func class(err error) error {
	var unexpected remoteserrors.ErrUnexpectedStatus
	var refused *resolver.RefusedError
	switch {
	case errdefs.IsInvalidArgument(err):
		return errdefs.ErrInvalidArgument
	case errors.As(err, &unexpected):
		return resolver.StatusClass(unexpected.StatusCode)
	case errors.As(err, &refused):
		// insufficient_scope: the registry knows the caller, who may not
		// pull this repository (permission denied); otherwise the
		// credential itself was refused (unauthenticated).
		return refused.Class()
	case errors.Is(err, docker.ErrInvalidAuthorization):
		return errdefs.ErrUnauthenticated
	case errdefs.IsUnauthorized(err):
		return errdefs.ErrUnauthenticated
	case errdefs.IsPermissionDenied(err):
		return errdefs.ErrPermissionDenied
	case errdefs.IsFailedPrecondition(err):
		// A sealed document no identity of this node opens.
		return errdefs.ErrFailedPrecondition
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
	if c, ok := networkClass(err); ok {
		return c
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
		// The registry could not be reached or failed: kubelet backs off
		// and retries, and alerts see an outage, not a bug.
		{"i/o timeout", context.DeadlineExceeded},
		{"TLS handshake timeout", context.DeadlineExceeded},
		{"Client.Timeout exceeded", context.DeadlineExceeded},
		{"connection refused", errdefs.ErrUnavailable},
		{"connection reset by peer", errdefs.ErrUnavailable},
		{"no such host", errdefs.ErrUnavailable},
		{"network is unreachable", errdefs.ErrUnavailable},
		{"no route to host", errdefs.ErrUnavailable},
		{"500 Internal Server Error", errdefs.ErrUnavailable},
		{"502 Bad Gateway", errdefs.ErrUnavailable},
		{"503 Service Unavailable", errdefs.ErrUnavailable},
		{"504 Gateway Timeout", errdefs.ErrUnavailable},
	} {
		if strings.Contains(msg, r.phrase) {
			return r.class
		}
	}
	return errdefs.ErrUnknown
}

// networkClass classifies a failure to reach the registry at all — a
// refused or reset connection, an unknown host, a TLS or read that timed
// out, a connection closed mid-answer — which net/http reports as a
// *url.Error around a net.Error. A timeout is DeadlineExceeded, anything
// else Unavailable: the registry is unreachable, which is not a bug
// (Unknown) and is what ensure_secret_pulled_images tolerates for
// credentials already on an image's record.
//
// A certificate the node does not trust is not an outage: it is the node's
// trust configuration (hosts.toml "ca") or someone in the middle, and it
// is FailedPrecondition.
func networkClass(err error) (error, bool) {
	var ne net.Error
	if !errors.As(err, &ne) {
		return nil, false
	}
	var verify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return errdefs.ErrFailedPrecondition, true
	}
	if ne.Timeout() {
		return context.DeadlineExceeded, true
	}
	return errdefs.ErrUnavailable, true
}

// unreachable reports a pull failure that says the registry could not be
// reached or failed on its side (network error, timeout, 5xx) — not that
// it refused anything.
func unreachable(err error) bool {
	c := class(err)
	return errors.Is(c, errdefs.ErrUnavailable) || errors.Is(c, context.DeadlineExceeded)
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
		msg = pa.scrub(msg, ref.String()) + remedy(c, pa, ref.Registry.Host)
	}
	return errgrpc.ToGRPC(withMessage(c, msg))
}

// remedy tells the caller of a pull refused for want of a credential what
// would give it one: the pod's annotation (its key, and the named form)
// or the node's configuration (the plugin's config key). It says nothing
// for other failures, or when a credential was presented (the message
// then names where it came from, which is what to fix).
func remedy(c error, pa *pullAuth, host string) string {
	if !errdefs.IsUnauthorized(c) {
		return ""
	}
	if u, ok := pa.presentedTo(host); ok && !(u.cred.Anonymous && u.cred.Source == keychain.SourceNone) {
		return ""
	}
	key := pa.src.annotationKey
	if key == "" {
		key = document.DefaultAnnotationPrefix + document.AnnotationName
	}
	return fmt.Sprintf("; to pull it, give the pod a credential document for %s in the annotation %s (or %s.<name>), "+
		"or give the node one in the plugin's node_credentials (documents, document_files or docker_config)", host, key, key)
}

func describeCredential(pa *pullAuth, host string) string {
	u, ok := pa.presentedTo(host)
	switch {
	case !ok:
		return "(no credential resolved)"
	case u.cred.Anonymous && u.cred.Source == keychain.SourceNone:
		// Not "anonymously": the registry's own answer usually says so.
		return "with no credential (none of the pod's annotations, the request's auth or the node's credentials is for this host)"
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
