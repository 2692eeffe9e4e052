package service

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	distref "github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/pkg/credclient/remotehosts"
)

// Labels containerd's CRI puts on the images it manages; an image without
// the first is not listed by CRI until CRI adopts it.
const (
	criImageLabel        = labels.CRIContainerdPrefix + ".image"
	criImageLabelManaged = "managed"
)

// CredentialRefLabel is set on every layer snapshot a direct pull creates:
// the opaque id (keychain.Credential.Ref) of the credential that pulled
// it, so a remote snapshotter can ask the Credentials service for exactly
// that credential. Never a secret.
const CredentialRefLabel = remotehosts.CredentialRefLabel

// pulled is a shared pull's result: the image id and the pullAuth that
// did the pull, whose record of what each host accepted every caller
// reports (their credentials are the same: they share the flight key).
type pulled struct {
	id string
	pa *pullAuth
	// shared is true for a caller that joined a pull already running.
	shared bool
}

// pullDirect pulls the image with the containerd client into namespace
// k8s.io and registers it as CRI would. Concurrent pulls of one image with
// the same credentials and snapshotter share one pull; the pullAuth
// returned is the one that pulled.
func (s *Service) pullDirect(ctx context.Context, req *runtime.PullImageRequest, ref registry.Reference, pa *pullAuth) (pulled, error) {
	// CRI's normalisation (ParseDockerRef drops a tag next to a digest),
	// so the image gets the names CRI would give it.
	named, err := distref.ParseDockerRef(ref.String())
	if err != nil {
		return pulled{pa: pa}, fmt.Errorf("image reference: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	snapshotter := s.snapshotterFor(req)
	key := named.String() + "\x00" + snapshotter + "\x00" + pa.identity()
	p, shared, err := s.flights.Do(ctx, key, func(ctx context.Context) (pulled, error) {
		id, err := s.pullAndRegister(ctx, named, ref.Registry.Host, snapshotter, pa)
		// The pullAuth goes back with a failure too: its record names the
		// credential the registry refused.
		return pulled{id: id, pa: pa}, err
	})
	if p.pa == nil {
		p.pa = pa
	}
	p.shared = shared
	return p, err
}

func (s *Service) pullAndRegister(ctx context.Context, named distref.Named, host, snapshotter string, pa *pullAuth) (string, error) {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	imageLabels := map[string]string{criImageLabel: criImageLabelManaged}
	var img containerd.Image
	for {
		var err error
		img, err = s.pullOnce(ctx, named.String(), host, snapshotter, imageLabels, pa)
		if err == nil {
			break
		}
		if !rejected(err) || !pa.fallback(ctx, host) {
			return "", err
		}
		log.G(ctx).WithField("image", named.String()).
			Info("b9-resolver: registry rejected the credential; trying the next source (isolation fallback)")
	}

	configDesc, err := img.Config(ctx)
	if err != nil {
		return "", fmt.Errorf("image config: %w", err)
	}
	id := configDesc.Digest.String()
	// The names CRI gives a pulled image: its id (the config digest), the
	// tag and the repo digest. CRI's image store follows image events in
	// k8s.io, so `crictl images` and kubelet see the image at once.
	repoDigest, repoTag := repoDigestAndTag(named, img.Target())
	for _, name := range []string{id, repoTag, repoDigest} {
		if name == "" {
			continue
		}
		if err := s.createOrUpdateImage(ctx, name, img.Target(), imageLabels); err != nil {
			return "", fmt.Errorf("image reference %s: %w", name, err)
		}
		// In process, CRI's image index is updated at once, as CRI's own
		// PullImage does; otherwise CRI follows the image event.
		if update := s.containerd.updateImage; update != nil {
			if err := update(ctx, name); err != nil {
				return "", fmt.Errorf("CRI image index for %s: %w", name, err)
			}
		}
	}
	return id, nil
}

// pullOnce is one client.Pull with a fresh resolver (a fallback retry must
// not reuse the authorizer that holds the rejected credential), fetching
// and unpacking as CRI's settings say (pullSettings).
func (s *Service) pullOnce(ctx context.Context, name, host, snapshotter string, imageLabels map[string]string, pa *pullAuth) (containerd.Image, error) {
	ps := &s.pull
	// The node-wide resolver's hosts: its Authorizer keeps each host's
	// challenge and tokens across pulls (keyed by credential), pa says
	// what this pull presents to each host.
	hosts := s.resolver.Hosts(pa)
	if ps.progressTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		progress := &pullProgress{}
		hosts = progress.hosts(hosts)
		go progress.watch(ctx, name, ps.progressTimeout, cancel)
	}
	// The credential-ref label always; CRI's own snapshot labels unless
	// disable_snapshot_annotations. WithImageHandlerWrapper keeps one
	// wrapper, so ours chains over CRI's.
	wrap := credentialRefWrapper(pa, host)
	if ps.snapshotAnnotations {
		info, credRef := snapshotters.AppendInfoHandlerWrapper(name), wrap
		wrap = func(h images.Handler) images.Handler { return credRef(info(h)) }
	}
	var resolver remotes.Resolver = docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
	if s.cfg.EnsureSecretPulledImages {
		// The manifest is fetched and checked even when its content is
		// here already: the pull must prove the repository serves it.
		resolver = newVerifyingResolver(resolver)
	}
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithPullLabels(imageLabels),
		containerd.WithMaxConcurrentDownloads(ps.maxConcurrentDownloads),
		containerd.WithDownloadLimiter(ps.limiter),
		containerd.WithConcurrentLayerFetchBuffer(ps.layerFetchBuffer),
		containerd.WithImageHandlerWrapper(wrap),
	}
	unpackOpts := []containerd.UnpackOpt{
		containerd.WithUnpackDuplicationSuppressor(ps.unpacking),
		containerd.WithUnpackApplyOpts(diff.WithSyncFs(ps.syncFs)),
	}
	if ps.unpackLimiter != nil {
		unpackOpts = append(unpackOpts, containerd.WithUnpackLimiter(ps.unpackLimiter))
	}
	opts = append(opts, containerd.WithUnpackOpts(unpackOpts))
	if ps.discardUnpackedLayers {
		// Lets GC remove layer blobs once unpacked.
		opts = append(opts, containerd.WithChildLabelMap(images.ChildGCLabelsFilterLayers))
	}
	return s.containerd.client.Pull(ctx, name, opts...)
}

// credentialRefWrapper adds CredentialRefLabel to the layers of every
// manifest, with the ref of the credential presented to the image's host.
// The unpacker passes containerd.io/snapshot/* annotations on as snapshot
// labels. Anonymous pulls get no label: there is nothing to ask for.
func credentialRefWrapper(pa *pullAuth, host string) func(images.Handler) images.Handler {
	return func(h images.Handler) images.Handler {
		return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			children, err := h.Handle(ctx, desc)
			if err != nil || !images.IsManifestType(desc.MediaType) {
				return children, err
			}
			u, ok := pa.presentedTo(host)
			if !ok || u.cred.Ref == "" {
				return children, nil
			}
			for i := range children {
				if images.IsLayerType(children[i].MediaType) {
					if children[i].Annotations == nil {
						children[i].Annotations = map[string]string{}
					}
					children[i].Annotations[CredentialRefLabel] = u.cred.Ref
				}
			}
			return children, nil
		})
	}
}

// createOrUpdateImage is CRI's createOrUpdateImageReference: create the
// name, or point an existing one at the new target with CRI's label.
func (s *Service) createOrUpdateImage(ctx context.Context, name string, target ocispec.Descriptor, imageLabels map[string]string) error {
	is := s.images
	img := images.Image{Name: name, Target: target, Labels: imageLabels}
	if _, err := is.Create(ctx, img); err == nil || !errdefs.IsAlreadyExists(err) {
		return err
	}
	old, err := is.Get(ctx, name)
	if err != nil {
		return err
	}
	if old.Target.Digest == target.Digest && old.Labels[criImageLabel] == criImageLabelManaged {
		return nil
	}
	_, err = is.Update(ctx, img, "target", "labels."+criImageLabel)
	return err
}

// repoDigestAndTag is CRI's util.GetRepoDigestAndTag.
func repoDigestAndTag(n distref.Named, target ocispec.Descriptor) (repoDigest, repoTag string) {
	if _, ok := n.(distref.NamedTagged); ok {
		repoTag = n.String()
	}
	if _, ok := n.(distref.Canonical); ok {
		repoDigest = n.String()
	} else {
		repoDigest = n.Name() + "@" + target.Digest.String()
	}
	return repoDigest, repoTag
}
