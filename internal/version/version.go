// Package version carries the build's version, set by the Makefile's
// -ldflags, and the containerd version the build links.
package version

import (
	containerd "github.com/containerd/containerd/v2/version"
)

// Version is the b9-resolver version; the Makefile sets it from git.
var Version = "dev"

// ContainerdVersion is the containerd release this binary is built against.
func ContainerdVersion() string { return containerd.Version }
