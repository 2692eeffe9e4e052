package service

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/transfer"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// With ensure_secret_pulled_images a pull must prove that the repository
// it names serves the image to the pod's credential. containerd skips
// fetching content it already has, so without this a registry that
// answers one HEAD with another tenant's manifest digest would be handed
// that tenant's image, unchecked, after a single request. The manifest
// the name resolves to is therefore always fetched from the registry
// (with the pod's credential) and checked against its digest.

// fetchVerified fetches desc's manifest with f and checks its size and
// digest. It reads at most containerd's manifest size limit.
func fetchVerified(ctx context.Context, f remotes.Fetcher, ref string, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > docker.MaxManifestSize {
		return nil, fmt.Errorf("manifest of %s is %d bytes, over the %d limit: %w", ref, desc.Size, docker.MaxManifestSize, errdefs.ErrFailedPrecondition)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("verifying %s: fetching its manifest %s: %w", ref, desc.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return nil, fmt.Errorf("verifying %s: reading its manifest %s: %w", ref, desc.Digest, err)
	}
	if int64(len(b)) != desc.Size || desc.Digest.Validate() != nil || digest.FromBytes(b) != desc.Digest {
		return nil, fmt.Errorf("verifying %s: the registry served a manifest that is not %s (%d bytes): %w", ref, desc.Digest, desc.Size, errdefs.ErrDataLoss)
	}
	return b, nil
}

// verifyingResolver fetches and checks the manifest every Resolve names,
// and serves the checked bytes to the pull's fetches of that digest, so a
// first pull costs no second manifest request.
type verifyingResolver struct {
	remotes.Resolver

	mu       sync.Mutex
	verified map[digest.Digest][]byte
}

func newVerifyingResolver(r remotes.Resolver) *verifyingResolver {
	return &verifyingResolver{Resolver: r, verified: map[digest.Digest][]byte{}}
}

func (r *verifyingResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	name, desc, err := r.Resolver.Resolve(ctx, ref)
	if err != nil {
		return name, desc, err
	}
	f, err := r.Resolver.Fetcher(ctx, name)
	if err != nil {
		return name, desc, err
	}
	b, err := fetchVerified(ctx, f, ref, desc)
	if err != nil {
		return name, desc, err
	}
	r.mu.Lock()
	r.verified[desc.Digest] = b
	r.mu.Unlock()
	return name, desc, nil
}

func (r *verifyingResolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	f, err := r.Resolver.Fetcher(ctx, ref)
	if err != nil {
		return nil, err
	}
	return verifiedFetcher{Fetcher: f, r: r}, nil
}

// SetOptions passes containerd's download settings on.
func (r *verifyingResolver) SetOptions(opts ...transfer.ImageResolverOption) {
	if wo, ok := r.Resolver.(remotes.ResolverWithOptions); ok {
		wo.SetOptions(opts...)
	}
}

type verifiedFetcher struct {
	remotes.Fetcher
	r *verifyingResolver
}

func (f verifiedFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	f.r.mu.Lock()
	b, ok := f.r.verified[desc.Digest]
	f.r.mu.Unlock()
	if ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	return f.Fetcher.Fetch(ctx, desc)
}
