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
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
)

// PullAccessLabel records, on every containerd image record of a pulled
// image (its id, tag and digest names), who could pull it
// (ensure_secret_pulled_images): PullAccessOpen once a pull succeeded with
// nothing but anonymous access or the node's own credentials on every host
// it used — anyone on the node could have it — else PullAccessSecret. Open
// is never taken back.
const (
	PullAccessLabel  = "b9.beam.cloud/pull-access"
	PullAccessOpen   = "open"
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

// recordTimeout bounds labelling a pulled image's records.
const recordTimeout = 30 * time.Second

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
// "absent" for it, since its records may exist before they are labelled.
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

// recordPullAccess labels every image record pointing at the image id's
// target. Failing to means the image cannot be handed out safely, so the
// pull fails (Unavailable) and kubelet retries; until a pull labels them,
// unlabelled records newer than the service stay hidden (hideSecretPulled).
// It runs to the end even if the caller gives up.
func (s *Service) recordPullAccess(ctx context.Context, id string, open bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, Namespace)
	s.accessMu.Lock()
	defer s.accessMu.Unlock()
	is := s.images
	img, err := is.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("recording who pulled %s: %w: %w", id, err, errdefs.ErrUnavailable)
	}
	records, err := is.List(ctx, "target.digest=="+img.Target.Digest.String())
	if err != nil {
		return fmt.Errorf("recording who pulled %s: %w: %w", id, err, errdefs.ErrUnavailable)
	}
	// Open is for the content, whatever name: a direct pull's tag record
	// is rewritten whole by the containerd client, its id record is not.
	want := PullAccessSecret
	for _, r := range records {
		if open || r.Labels[PullAccessLabel] == PullAccessOpen {
			want = PullAccessOpen
		}
	}
	for _, r := range records {
		if r.Labels[PullAccessLabel] == want {
			continue
		}
		if r.Labels == nil {
			r.Labels = map[string]string{}
		}
		r.Labels[PullAccessLabel] = want
		if _, err := is.Update(ctx, r, "labels."+PullAccessLabel); err != nil {
			return fmt.Errorf("recording who pulled %s (%s): %w: %w", id, r.Name, err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// hideSecretPulled turns containerd's answer for an image only pods' own
// credentials pulled — or one being pulled right now, or one created since
// this service started that no pull has labelled yet (a forward pull whose
// labelling failed, an image another client pulled) — into "not present",
// so kubelet calls PullImage with the asking pod's credentials even under
// IfNotPresent, and the registry decides again (a manifest request; the
// layers are already here). Images pulled openly, and images older than
// the service that it never labelled (preloaded), are answered as they are.
func (s *Service) hideSecretPulled(ctx context.Context, req *runtime.ImageStatusRequest, resp *runtime.ImageStatusResponse) (*runtime.ImageStatusResponse, error) {
	id := resp.GetImage().GetId()
	if id == "" {
		return resp, nil
	}
	name := pullingName(req.GetImage().GetImage())
	s.accessMu.Lock()
	inFlight := name != "" && s.pulling[name] > 0
	s.accessMu.Unlock()
	if inFlight {
		return &runtime.ImageStatusResponse{}, nil
	}
	ctx = namespaces.WithNamespace(ctx, Namespace)
	for _, n := range []string{id, name} {
		if n == "" {
			continue
		}
		img, err := s.images.Get(ctx, n)
		switch {
		case errdefs.IsNotFound(err):
			continue
		case err != nil:
			// Answering "present" here would let a pod skip the check.
			return nil, fmt.Errorf("image status %s: reading its pull record: %w", id, err)
		case img.Labels[PullAccessLabel] == PullAccessSecret,
			img.Labels[PullAccessLabel] == "" && img.CreatedAt.After(s.ensureSince):
			log.G(ctx).WithField("image_id", id).Debug("b9-resolver: image reported absent until a pull with the pod's credentials; the registry decides")
			return &runtime.ImageStatusResponse{}, nil
		}
	}
	return resp, nil
}
