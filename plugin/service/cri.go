package service

import (
	"context"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/metrics"
)

// runtimeHandlerAnnotation is the deprecated sandbox annotation CRI still
// reads when PullImageRequest has no runtime handler.
const runtimeHandlerAnnotation = "io.kubernetes.cri.runtime-handler"

// PullImage resolves the credentials for the image's registry from the
// pod's annotations, the request's auth and the node, then pulls (direct)
// or forwards (forward). It returns the image id as containerd's CRI does.
func (s *Service) PullImage(ctx context.Context, req *runtime.PullImageRequest) (_ *runtime.PullImageResponse, retErr error) {
	start := time.Now()
	kind := "unknown"
	defer func() { metrics.Pull(string(s.cfg.PullMode), kind, retErr, time.Since(start)) }()
	ref, err := s.cfg.detector.ParseReference(req.GetImage().GetImage())
	if err != nil {
		return nil, errgrpc.ToGRPC(withMessage(errdefs.ErrInvalidArgument, "pull: "+err.Error()))
	}
	kind = string(ref.Registry.Kind)
	host := ref.Registry.Host
	docs, err := document.FromAnnotations(req.GetSandboxConfig().GetAnnotations(), s.cfg.AnnotationPrefix, host,
		s.annotationOptions(req.GetSandboxConfig().GetMetadata().GetNamespace())...)
	if err != nil {
		return nil, pullStatus(err, ref, nil)
	}
	auth, err := chain.FromAuthConfig(req.GetAuth(), host, s.cfg.detector)
	if err != nil {
		return nil, pullStatus(err, ref, nil)
	}
	src := &requestSources{imageHost: host, annotations: docs, auth: auth, node: s.node,
		annotationKey: s.cfg.AnnotationPrefix + document.AnnotationName}
	pa := newPullAuth(s.keychain, s.cfg.detector, src, s.cfg.Isolation == IsolationStrict)

	var id string
	var shared bool
	if s.cfg.EnsureSecretPulledImages {
		// Under the canonical name and as asked: forward mode hands the
		// latter to containerd, whose records then carry it.
		for _, name := range pullingNames(ref.String(), req.GetImage().GetImage()) {
			s.beginPull(name)
			defer s.endPull(name)
		}
	}
	if s.cfg.PullMode == PullForward {
		id, err = s.pullForward(ctx, req, ref, pa)
	} else {
		var p pulled
		p, err = s.pullDirect(ctx, req, ref, pa)
		id, pa, shared = p.id, p.pa, p.shared
	}
	fields := log.Fields{"image": ref.String(), "registry": host, "kind": ref.Registry.Kind, "mode": s.cfg.PullMode}
	addPod(fields, req.GetSandboxConfig())
	u, presented := pa.presentedTo(host)
	if presented {
		fields["credential_source"], fields["provider"] = u.cred.Source, u.cred.Provider
		if u.cred.Ref != "" {
			fields["credential_ref"] = u.cred.Ref
		}
	}
	if s.cfg.EnsureSecretPulledImages {
		switch {
		case err == nil:
			s.recordPull(ref, id, pa)
		case rejected(err):
			s.forgetRefused(ctx, ref, pa)
		case unreachable(err) && ctx.Err() == nil:
			if accepted, why := s.acceptOnRecord(ctx, ref, pa); accepted != "" {
				metrics.EnsureDecision("outage_accepted")
				fields["image_id"], fields["accepted_for"] = accepted, why
				log.G(ctx).WithFields(fields).WithError(pullStatus(err, ref, pa)).
					Warn("b9-resolver: registry unreachable; image on the node accepted for a credential on its record")
				id, err = accepted, nil
			} else {
				metrics.EnsureDecision("outage_refused")
			}
		}
	}
	if err != nil {
		st := pullStatus(err, ref, pa)
		log.G(ctx).WithFields(fields).WithError(st).Warn("b9-resolver: pull failed")
		return nil, st
	}
	fields["image_id"], fields["shared"], fields["duration"] = id, shared, time.Since(start)
	log.G(ctx).WithFields(fields).Info("b9-resolver: pulled image")
	if len(s.opts.onPulled) > 0 {
		p := Pulled{Image: ref, ImageID: id, Credential: keychain.Anonymous(ref.Registry),
			PodNamespace: req.GetSandboxConfig().GetMetadata().GetNamespace()}
		if presented {
			p.Credential = u.cred
			if u.cand.Cred == nil && u.cand.Doc.Type != "" {
				doc := u.cand.Doc
				p.Document = &doc
			}
		}
		for _, fn := range s.opts.onPulled {
			fn(ctx, p)
		}
	}
	return &runtime.PullImageResponse{ImageRef: id}, nil
}

// addPod names the pod a pull is for (the sandbox config's metadata), so
// an operator can match a pull or a refusal in containerd's log to a pod.
// A pull with no sandbox config (crictl without --pod-config) names none.
func addPod(fields log.Fields, sc *runtime.PodSandboxConfig) {
	md := sc.GetMetadata()
	if md == nil || md.GetName() == "" {
		return
	}
	fields["pod"] = md.GetNamespace() + "/" + md.GetName()
	if uid := md.GetUid(); uid != "" {
		fields["pod_uid"] = uid
	}
}

// annotationOptions say how a pod's annotation values are read: sealed
// ones opened with the node's identities for the pod's namespace, plain
// ones refused under sealed.require.
func (s *Service) annotationOptions(podNamespace string) []document.Option {
	opts := []document.Option{document.RequireSealed(s.cfg.Sealed.Require)}
	if s.identities != nil {
		opts = append(opts, document.WithUnsealer(s.identities, podNamespace))
	}
	return opts
}

// snapshotterFor picks the snapshotter as CRI does: the runtime handler's
// (from the request, else the deprecated sandbox annotation), else the
// default one (pullSettings: CRI's settings with the b9 table's overrides).
func (s *Service) snapshotterFor(req *runtime.PullImageRequest) string {
	handler := req.GetImage().GetRuntimeHandler()
	if handler == "" {
		handler = req.GetSandboxConfig().GetAnnotations()[runtimeHandlerAnnotation]
	}
	return s.snapshotterName(handler)
}

func (s *Service) snapshotterName(handler string) string {
	if sn, ok := s.pull.runtimeSnapshotters[handler]; ok && handler != "" {
		return sn
	}
	return s.pull.snapshotter
}

// The calls below go to containerd's CRI unchanged (in process in plugin
// mode, over containerd's socket in standalone mode).

// ListImages is forwarded to containerd's CRI.
func (s *Service) ListImages(ctx context.Context, req *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	return s.containerd.cri.ListImages(ctx, req)
}

// ImageStatus is forwarded to containerd's CRI; with
// ensure_secret_pulled_images an image only pods' own credentials pulled
// is answered as absent (hideSecretPulled).
func (s *Service) ImageStatus(ctx context.Context, req *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	fwd := req
	if spec := imageSpecWithoutCredentials(req.GetImage(), s.cfg.AnnotationPrefix); spec != req.GetImage() {
		fwd = &runtime.ImageStatusRequest{Image: spec, Verbose: req.GetVerbose()}
	}
	resp, err := s.containerd.cri.ImageStatus(ctx, fwd)
	if err != nil || !s.cfg.EnsureSecretPulledImages {
		return resp, err
	}
	resp, err = s.ensureStatus(ctx, req, resp)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return resp, nil
}

// RemoveImage is forwarded to containerd's CRI.
func (s *Service) RemoveImage(ctx context.Context, req *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	return s.containerd.cri.RemoveImage(ctx, req)
}

// ImageFsInfo is forwarded to containerd's CRI.
func (s *Service) ImageFsInfo(ctx context.Context, req *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	return s.containerd.cri.ImageFsInfo(ctx, req)
}

// StreamImages is forwarded to containerd's CRI, message by message.
func (s *Service) StreamImages(req *runtime.StreamImagesRequest, stream grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error {
	return s.containerd.cri.StreamImages(req, stream)
}
