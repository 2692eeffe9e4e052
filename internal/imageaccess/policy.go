package imageaccess

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	distref "github.com/distribution/reference"
)

// Policy is KEP-2535's credential verification policy: which images a
// pod may start without the registry checking its credentials.
type Policy string

const (
	// NeverVerify: any pod may start any image on the node.
	NeverVerify Policy = "NeverVerify"
	// NeverVerifyPreloadedImages: images the service never pulled (on the
	// node before it started recording, or pulled by another client) need
	// no check; images pulled through it with a pod's credential do. The
	// default.
	NeverVerifyPreloadedImages Policy = "NeverVerifyPreloadedImages"
	// NeverVerifyAllowlistedImages: only repositories on the allowlist
	// need no check, however they came to the node.
	NeverVerifyAllowlistedImages Policy = "NeverVerifyAllowlistedImages"
	// AlwaysVerify: every image needs a check, preloaded ones included,
	// unless a pull without a pod credential proved it open.
	AlwaysVerify Policy = "AlwaysVerify"
)

// DefaultPolicy is kubelet's default.
const DefaultPolicy = NeverVerifyPreloadedImages

// Policies lists the policies, for messages.
var Policies = []Policy{NeverVerify, NeverVerifyPreloadedImages, NeverVerifyAllowlistedImages, AlwaysVerify}

// Valid reports whether p is one of Policies.
func (p Policy) Valid() bool {
	for _, q := range Policies {
		if p == q {
			return true
		}
	}
	return false
}

// Allowlist is NeverVerifyAllowlistedImages' list of repositories, in
// kubelet's syntax: a full repository name without tag or digest
// ("registry.example/team/app", "docker.io/library/busybox"), or a prefix
// ending in "/*" ("registry.example/base/*") that needs at least a host.
type Allowlist struct {
	exact    map[string]bool
	prefixes []string
}

// NewAllowlist checks and compiles patterns; the error names the first
// bad one.
func NewAllowlist(patterns []string) (Allowlist, error) {
	a := Allowlist{exact: map[string]bool{}}
	for i, p := range patterns {
		if p != strings.TrimSpace(p) || p == "" {
			return Allowlist{}, fmt.Errorf("[%d] %q: empty, or spaces around it: %w", i, p, errdefs.ErrInvalidArgument)
		}
		if prefix, ok := strings.CutSuffix(p, "/*"); ok {
			if prefix == "" || strings.Contains(prefix, "*") {
				return Allowlist{}, fmt.Errorf("[%d] %q: a wildcard pattern is <host>[/<path>]/* with no other *: %w", i, p, errdefs.ErrInvalidArgument)
			}
			a.prefixes = append(a.prefixes, prefix+"/")
			continue
		}
		named, err := distref.ParseNormalizedNamed(p)
		if err != nil || strings.Contains(p, "*") {
			return Allowlist{}, fmt.Errorf("[%d] %q is not a repository name or a <prefix>/* pattern: %w", i, p, errdefs.ErrInvalidArgument)
		}
		if named.Name() != p {
			return Allowlist{}, fmt.Errorf("[%d] %q: write the full repository name %q, with no tag or digest: %w", i, p, named.Name(), errdefs.ErrInvalidArgument)
		}
		a.exact[p] = true
	}
	return a, nil
}

// Match reports whether repository (a full name, as distribution's
// reference.Named.Name gives it) is on the list.
func (a Allowlist) Match(repository string) bool {
	if repository == "" {
		return false
	}
	if a.exact[repository] {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(repository, p) {
			return true
		}
	}
	return false
}
