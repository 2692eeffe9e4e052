// Package imagebuild builds small OCI images from files, without a
// container engine and without a base image: one layer holding the given
// files (and their parent folders), an OCI config with the entrypoint, and
// nothing that depends on when or where it was built. The same inputs give
// the same digest: every entry is owned by 0:0 with a fixed time (the
// spec's Created, normally SOURCE_DATE_EPOCH), entries are sorted, and the
// layer is gzipped by go-containerregistry with no header name or time.
// `make image` uses it for the b9-resolver image (an OCI layout); the
// integration suite uses it for the images kubelet runs.
package imagebuild
