package credentials

import "errors"

// Lookup failures. They are wrapped with errdefs classes where returned so
// errgrpc.ToGRPC sends NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT.
var (
	// errUnknownRef: the ref was never recorded here (or not kept across a
	// restart). The message says why, so an operator reading a snapshotter
	// log can act; it never says which refs exist.
	errUnknownRef = errors.New("credential_ref is not known to this node (never recorded, evicted, or recorded before a restart without persistence)")
	errNoRecord   = errors.New("no credential recorded for this registry and repository, and no node credential applies")
)
