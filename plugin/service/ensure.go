package service

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullAccessLabel records, on the containerd image record named by the
// image id, who could pull the image (ensure_secret_pulled_images):
// PullAccessOpen once a pull succeeded anonymously or with the node's own
// credentials — anyone on the node could have it — else PullAccessSecret
// when only a pod's own credential (annotation or request auth) pulled it.
// Open is never taken back.
const (
	PullAccessLabel  = "b9.beam.cloud/pull-access"
	PullAccessOpen   = "open"
	PullAccessSecret = "secret"
)

// openAccess reports whether the credential u that pulled an image is no
// pod's own: nothing was presented (the registry asked for none), it is
// anonymous or public, or it came from the node's credentials.
func openAccess(u presented, ok bool) bool {
	if !ok || u.cred.Anonymous || u.cand.public() {
		return true
	}
	fromPod := u.cand.cred != nil || u.cand.doc.Type != ""
	return !fromPod || u.cand.tier == tierNode
}

// recordPullAccess labels the image id's record after a successful pull.
// A failure only costs the protection for this image, so it is logged,
// not returned: the pull itself succeeded.
func (s *Service) recordPullAccess(ctx context.Context, id string, open bool) {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	s.accessMu.Lock()
	defer s.accessMu.Unlock()
	is := s.client.ImageService()
	img, err := is.Get(ctx, id)
	if err != nil {
		log.G(ctx).WithError(err).WithField("image_id", id).Warn("b9-resolver: cannot record who pulled the image")
		return
	}
	want := PullAccessSecret
	if open || img.Labels[PullAccessLabel] == PullAccessOpen {
		want = PullAccessOpen
	}
	if img.Labels[PullAccessLabel] == want {
		return
	}
	if img.Labels == nil {
		img.Labels = map[string]string{}
	}
	img.Labels[PullAccessLabel] = want
	if _, err := is.Update(ctx, img, "labels."+PullAccessLabel); err != nil {
		log.G(ctx).WithError(err).WithField("image_id", id).Warn("b9-resolver: cannot record who pulled the image")
	}
}

// hideSecretPulled turns containerd's answer for an image only pods' own
// credentials pulled into "not present", so kubelet calls PullImage — with
// the asking pod's credentials — even under IfNotPresent, and the registry
// decides again (a manifest request; the layers are already here). Images
// pulled openly, and images this service did not pull (preloaded), are
// answered as they are.
func (s *Service) hideSecretPulled(ctx context.Context, resp *runtime.ImageStatusResponse) (*runtime.ImageStatusResponse, error) {
	id := resp.GetImage().GetId()
	if id == "" {
		return resp, nil
	}
	img, err := s.client.ImageService().Get(namespaces.WithNamespace(ctx, Namespace), id)
	switch {
	case errdefs.IsNotFound(err):
		return resp, nil
	case err != nil:
		// Answering "present" here would let a pod skip the check.
		return nil, fmt.Errorf("image status %s: reading its pull record: %w", id, err)
	case img.Labels[PullAccessLabel] == PullAccessSecret:
		log.G(ctx).WithField("image_id", id).Debug("b9-resolver: secret-pulled image reported absent; the pod's PullImage decides")
		return &runtime.ImageStatusResponse{}, nil
	}
	return resp, nil
}
