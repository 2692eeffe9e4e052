package registry

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// MaxReferenceLength bounds an image reference: a 253-character host, a
// port, a 255-character repository, a 128-character tag and a digest fit
// well inside it.
const MaxReferenceLength = 1024

// Reference is a parsed image reference.
type Reference struct {
	// Named is the normalised reference ("docker.io/library/ubuntu:latest").
	Named reference.Named
	// Registry is the registry the image lives in.
	Registry Registry
	// Repository is the path within the registry ("library/ubuntu").
	Repository string
	Tag        string
	Digest     string
}

// String is the normalised reference, tag or digest included.
func (r Reference) String() string {
	if r.Named == nil {
		return ""
	}
	return r.Named.String()
}

// ParseReference parses an image reference as containerd and the Docker CLI
// do (github.com/distribution/reference), after removing beta9's
// "docker://" or "oci://" prefix. Docker Hub's names are folded into
// "docker.io", the host is lower-cased, a missing tag becomes "latest".
func ParseReference(s string) (Reference, error) { return (*Detector)(nil).ParseReference(s) }

// ParseReference is ParseReference with this detector's mappings.
func (d *Detector) ParseReference(s string) (Reference, error) {
	raw := strings.TrimSpace(s)
	for _, p := range []string{"docker://", "oci://"} {
		if strings.HasPrefix(raw, p) {
			raw = raw[len(p):]
			break
		}
	}
	if raw == "" {
		return Reference{}, invalidReference(reference.ErrNameEmpty)
	}
	if len(raw) > MaxReferenceLength {
		// The grammar's regexps run in time linear in the input but with a
		// large constant: a megabyte-long "reference" in a PullImage request
		// would hold a pull for seconds. No valid reference comes close.
		return Reference{}, fmt.Errorf("image reference: longer than %d characters: %w", MaxReferenceLength, errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(raw)
	if err != nil {
		// ParseNormalizedNamed does not wrap its "must be lowercase" error.
		if _, lowerErr := reference.ParseNormalizedNamed(strings.ToLower(raw)); lowerErr == nil {
			err = reference.ErrNameContainsUppercase
		}
		return Reference{}, invalidReference(err)
	}
	domain, path := reference.Domain(named), reference.Path(named)
	if !validHost(strings.ToLower(domain)) {
		return Reference{}, invalidReference(reference.ErrReferenceInvalidFormat)
	}
	if canonical, _ := NormalizeHost(domain); canonical != domain && canonical != "" {
		// Re-parse under the canonical host so Docker Hub's "library/"
		// prefix is added for registry-1.docker.io/ubuntu too.
		rest := strings.TrimPrefix(named.String(), domain+"/"+path)
		named, err = reference.ParseNormalizedNamed(canonical + "/" + path + rest)
		if err != nil {
			return Reference{}, invalidReference(err)
		}
		domain, path = reference.Domain(named), reference.Path(named)
	}
	named = reference.TagNameOnly(named)
	ref := Reference{Named: named, Registry: d.Detect(domain), Repository: path}
	if t, ok := named.(reference.Tagged); ok {
		ref.Tag = t.Tag()
	}
	if dg, ok := named.(reference.Digested); ok {
		ref.Digest = dg.Digest().String()
	}
	return ref, nil
}

// invalidReference names what is wrong without repeating the reference: an
// image string is not secret, but it can be any length and any bytes.
func invalidReference(err error) error {
	reason := "invalid reference format"
	switch {
	case errors.Is(err, reference.ErrNameContainsUppercase):
		reason = "repository name must be lowercase"
	case errors.Is(err, reference.ErrNameEmpty):
		reason = "empty reference"
	case errors.Is(err, reference.ErrNameTooLong):
		reason = fmt.Sprintf("repository name longer than %d characters", reference.RepositoryNameTotalLengthMax)
	case errors.Is(err, reference.ErrTagInvalidFormat):
		reason = "invalid tag"
	case errors.Is(err, reference.ErrDigestInvalidFormat):
		reason = "invalid digest"
	}
	return fmt.Errorf("image reference: %s: %w", reason, errdefs.ErrInvalidArgument)
}
