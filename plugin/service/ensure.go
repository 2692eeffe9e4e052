package service

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	distref "github.com/distribution/reference"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/imageaccess"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/metrics"
)

// ensure_secret_pulled_images is KEP-2535 on the image service side, for
// kubelets without it: ImageStatus reports an image absent to a pod that
// may not use it without the registry checking its credentials, so
// kubelet calls PullImage with the pod's credentials even under
// IfNotPresent, and the registry decides (one manifest request; the layers
// stay). What a pod may use is decided per (repository, image id) from
// the records of internal/imageaccess, the configured policy and TTL.

// PullAccessLabel is the image-record label an earlier version kept
// instead of access records ("secret" or "open" for all records of a
// content). It is only read: a record it marks "secret" that has no
// access record is hidden, so upgrading does not expose images those
// versions hid.
const (
	PullAccessLabel  = "b9.beam.cloud/pull-access"
	PullAccessSecret = "secret"
)

// openAccess reports whether a credential presented during a pull is no
// pod's own: anonymous or public, or from the node's credentials.
func openAccess(u presented) bool {
	if u.cred.Anonymous || u.cand.Public() {
		return true
	}
	fromPod := u.cand.Cred != nil || u.cand.Doc.Type != ""
	return !fromPod || u.cand.Tier == chain.TierNode
}

// pullWasOpen reports whether every host of a pull (the registry and any
// mirror) got only open access all along; a host that asked for nothing
// counts as open.
func pullWasOpen(pa *pullAuth) bool {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	return !pa.podCredentialUsed
}

// pullingName is the name ImageStatus may ask for while a pull of ref is
// under way (its CRI-normalised form), or "" for an id or digest-only
// reference.
func pullingName(image string) string {
	named, err := distref.ParseDockerRef(image)
	if err != nil {
		return ""
	}
	return named.String()
}

// repositoryOf is the full repository name of an image name ("" for an
// id, which names none).
func repositoryOf(image string) string {
	named, err := distref.ParseDockerRef(image)
	if err != nil {
		return ""
	}
	return named.Name()
}

// pullingNames are the distinct non-empty pullingName forms of images.
func pullingNames(images ...string) []string {
	var names []string
	for _, image := range images {
		if n := pullingName(image); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// beginPull marks name as being pulled: until endPull, ImageStatus answers
// "absent" for it, since its records may exist before the pull's access
// is recorded.
func (s *Service) beginPull(name string) {
	s.accessMu.Lock()
	defer s.accessMu.Unlock()
	if s.pulling == nil {
		s.pulling = map[string]int{}
	}
	s.pulling[name]++
}

func (s *Service) endPull(name string) {
	s.accessMu.Lock()
	defer s.accessMu.Unlock()
	if s.pulling[name]--; s.pulling[name] <= 0 {
		delete(s.pulling, name)
	}
}

func (s *Service) inFlight(name string) bool {
	s.accessMu.Lock()
	defer s.accessMu.Unlock()
	return name != "" && s.pulling[name] > 0
}

// fingerprint is the access records' handle for a candidate credential
// ("" for none): keyed, so it says nothing about the secret.
func (s *Service) fingerprint(c chain.Candidate) string {
	switch {
	case c.Cred != nil:
		return s.access.Fingerprint("identity-token", c.Cred.Username, c.Cred.Secret.Reveal())
	case c.Doc.Type != "" && c.Doc.Type != document.TypePublic:
		return s.access.Fingerprint("document", c.Doc.Identity())
	}
	return ""
}

// recordPull notes what a successful pull proved: the repository served
// the image openly, or to the credential presented to the image's host.
func (s *Service) recordPull(ref registry.Reference, id string, pa *pullAuth) {
	k := imageaccess.Key{Repository: repositoryOf(ref.String()), ImageID: id}
	if pullWasOpen(pa) {
		s.access.Accepted(k, true, "")
		return
	}
	fp := ""
	if u, ok := pa.presentedTo(ref.Registry.Host); ok && !openAccess(u) {
		fp = s.fingerprint(u.cand)
	}
	s.access.Accepted(k, false, fp)
}

// forgetRefused drops from the image's record a credential its registry
// has just refused, so it no longer counts during an outage.
func (s *Service) forgetRefused(ctx context.Context, ref registry.Reference, pa *pullAuth) {
	u, ok := pa.presentedTo(ref.Registry.Host)
	if !ok || openAccess(u) {
		return
	}
	if id, err := s.localImageID(ctx, ref); err == nil {
		s.access.Refused(imageaccess.Key{Repository: repositoryOf(ref.String()), ImageID: id}, s.fingerprint(u.cand))
	}
}

// localImageID is the id of the image the node holds under ref's name,
// from containerd's CRI (never hidden).
func (s *Service) localImageID(ctx context.Context, ref registry.Reference) (string, error) {
	resp, err := s.containerd.cri.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref.String()}})
	if err != nil {
		return "", err
	}
	if resp.GetImage().GetId() == "" {
		return "", fmt.Errorf("%s is not on the node: %w", ref, errdefs.ErrNotFound)
	}
	return resp.GetImage().GetId(), nil
}

// acceptOnRecord decides a pull that failed because the registry is
// unreachable: the image the node already holds under the name is
// accepted if its record is open or holds a credential the pod presents
// (the first source only under strict isolation). It returns the image
// id, or "" when the pull stays refused.
func (s *Service) acceptOnRecord(ctx context.Context, ref registry.Reference, pa *pullAuth) (string, string) {
	id, err := s.localImageID(ctx, ref)
	if err != nil {
		return "", ""
	}
	rec, ok := s.access.Get(imageaccess.Key{Repository: repositoryOf(ref.String()), ImageID: id})
	if !ok {
		return "", ""
	}
	if rec.Open {
		return id, "open"
	}
	for i := 0; !pa.strict || i < 1; i++ {
		c, more, err := pa.candidates(ref.Registry.Host).At(ctx, i)
		if err != nil || !more {
			break
		}
		if fp := s.fingerprint(c); fp != "" && rec.Has(fp, 0, time.Time{}) {
			return id, "credential"
		}
	}
	return "", ""
}

// ensureStatus answers ImageStatus for ensure_secret_pulled_images: the
// image as containerd's CRI reports it if the asking pod may use it
// unchecked (mayUse), its names cut to those the pod may see; else
// "absent".
func (s *Service) ensureStatus(ctx context.Context, req *runtime.ImageStatusRequest, resp *runtime.ImageStatusResponse) (*runtime.ImageStatusResponse, error) {
	id := resp.GetImage().GetId()
	if id == "" || s.cfg.VerificationPolicy == imageaccess.NeverVerify {
		return resp, nil
	}
	name := pullingName(req.GetImage().GetImage())
	if s.inFlight(name) {
		metrics.EnsureDecision("hidden")
		return &runtime.ImageStatusResponse{}, nil
	}
	repo := repositoryOf(req.GetImage().GetImage())
	why, err := s.mayUse(ctx, repo, id, name, req.GetImage().GetAnnotations())
	if err != nil {
		return nil, err
	}
	if why == "" {
		metrics.EnsureDecision("hidden")
		log.G(ctx).WithField("image_id", id).
			Debug("b9-resolver: image reported absent until a pull with the pod's credentials; the registry decides")
		return &runtime.ImageStatusResponse{}, nil
	}
	metrics.EnsureDecision("shown_" + why)
	return s.visibleNames(resp, repo), nil
}

// mayUse says why the pod may use the image unchecked ("open",
// "allowlisted", "preloaded", "credential"), or "" if it may not.
func (s *Service) mayUse(ctx context.Context, repo, id, name string, annotations map[string]string) (string, error) {
	policy := s.cfg.VerificationPolicy
	if policy == imageaccess.NeverVerifyAllowlistedImages && s.cfg.allowlist.Match(repo) {
		return "allowlisted", nil
	}
	if repo == "" {
		// An id names no repository: only an image open somewhere, or
		// preloaded, is anyone's.
		if s.access.OpenAnywhere(id) {
			return "open", nil
		}
		return s.preloaded(ctx, policy, id)
	}
	rec, ok := s.access.Get(imageaccess.Key{Repository: repo, ImageID: id})
	switch {
	case !ok:
		return s.preloaded(ctx, policy, name)
	case rec.Open:
		return "open", nil
	case s.cfg.verificationTTL > 0 && rec.Has(s.annotationFingerprint(ctx, repo, annotations), s.cfg.verificationTTL, time.Now()):
		return "credential", nil
	}
	return "", nil
}

// preloaded reports "preloaded" for an image record (by name or id) that
// no pull through this service has a record of and that was on the node
// before the service started keeping records, when the policy exempts
// such images. A record created since (another client's pull, a pull
// that failed half way) is not preloaded: it stays hidden until a pull
// records it.
func (s *Service) preloaded(ctx context.Context, policy imageaccess.Policy, name string) (string, error) {
	if policy != imageaccess.NeverVerifyPreloadedImages || name == "" {
		return "", nil
	}
	img, err := s.images.Get(namespaces.WithNamespace(ctx, Namespace), name)
	switch {
	case errdefs.IsNotFound(err):
		return "", nil
	case err != nil:
		// Answering "present" here would let a pod skip the check.
		return "", fmt.Errorf("image status %s: reading its record: %w", name, err)
	case img.Labels[PullAccessLabel] == PullAccessSecret, !img.CreatedAt.Before(s.access.Since()):
		return "", nil
	}
	return "preloaded", nil
}

// annotationFingerprint is the fingerprint of the credential the pod's
// annotations (which kubelet copies into the ImageStatus image spec) give
// the repository's host, or "".
func (s *Service) annotationFingerprint(ctx context.Context, repo string, annotations map[string]string) string {
	ref, err := s.cfg.detector.ParseReference(repo)
	if err != nil {
		return ""
	}
	host := ref.Registry.Host
	docs, err := document.FromAnnotations(annotations, s.cfg.AnnotationPrefix, host)
	if err != nil {
		return ""
	}
	c, ok, err := chain.Documents{Tier: chain.TierAnnotation, Docs: docs}.Lookup(ctx, chain.Query{Host: host, ImageHost: host})
	if err != nil || !ok {
		return ""
	}
	return s.fingerprint(c)
}

// visibleNames cuts the image's tags and digests to the repository asked
// for and those open to anyone: another repository's name for the same
// content is that repository's business.
func (s *Service) visibleNames(resp *runtime.ImageStatusResponse, repo string) *runtime.ImageStatusResponse {
	out := proto.Clone(resp).(*runtime.ImageStatusResponse)
	id := out.GetImage().GetId()
	keep := func(names []string) []string {
		var kept []string
		for _, n := range names {
			r := repositoryOf(n)
			if rec, ok := s.access.Get(imageaccess.Key{Repository: r, ImageID: id}); r == repo || (ok && rec.Open) {
				kept = append(kept, n)
			}
		}
		return kept
	}
	out.Image.RepoTags, out.Image.RepoDigests = keep(out.Image.RepoTags), keep(out.Image.RepoDigests)
	return out
}

// verifyForwarded checks, after containerd's CRI pulled ref (forward
// mode), that ref's registry serves the manifest the node now holds under
// that name to the pod's credential, and that it is the image CRI
// answered: CRI reuses local content, so its pull alone proves nothing.
func (s *Service) verifyForwarded(ctx context.Context, ref registry.Reference, id string, pa *pullAuth) error {
	name := pullingName(ref.String())
	img, err := s.containerd.client.GetImage(namespaces.WithNamespace(ctx, Namespace), name)
	if err != nil {
		return fmt.Errorf("verifying %s: its record after the pull: %w", ref, err)
	}
	config, err := img.Config(namespaces.WithNamespace(ctx, Namespace))
	if err != nil {
		return fmt.Errorf("verifying %s: %w", ref, err)
	}
	if config.Digest.String() != id {
		return fmt.Errorf("verifying %s: the name moved to another image during the pull; pull again: %w", ref, errdefs.ErrAborted)
	}
	f, err := s.resolver.Resolver(pa).Fetcher(ctx, name)
	if err != nil {
		return err
	}
	_, err = fetchVerified(ctx, f, ref.String(), img.Target())
	return err
}
