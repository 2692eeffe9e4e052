package service

import (
	"context"
	"strings"

	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// pullForward resolves the image host's credential and forwards the pull
// to containerd's CRI with it as the request's auth. The credential is
// pinned to the host with server_address: containerd's authorizer then
// offers it to that host name only, never to a mirror. The pull itself is
// containerd's, over its own transport, which b9 cannot wrap: Go's client
// copies the Authorization header containerd set to a redirect target on
// the same host name (plain http, another port) or a subdomain, and
// containerd does not remove it. Direct mode binds every credential to its
// origin (scheme, host, port); use it where registries redirect.
//
// After the pull the layer snapshots get CredentialRefLabel, as direct
// mode's do, in the background (labelAfterPull).
//
// A rejected credential is handled as direct mode's Authorizer does: it is
// dropped from the keychain (which would otherwise keep serving a revoked
// or expired ECR token or ACR refresh token until its margin) and the pull
// is forwarded once more with a freshly minted one, before any fallback.
func (s *Service) pullForward(ctx context.Context, req *runtime.PullImageRequest, ref registry.Reference, pa *pullAuth) (string, error) {
	host := ref.Registry.Host
	sandbox := withoutCredentialAnnotations(req.GetSandboxConfig(), s.cfg.AnnotationPrefix)
	// renewed: this source's credential was already re-minted once.
	renewed := false
	for {
		cred, err := pa.credential(ctx, host)
		if err != nil {
			return "", err
		}
		fwd := &runtime.PullImageRequest{Image: imageSpecWithoutCredentials(req.GetImage(), s.cfg.AnnotationPrefix), Auth: forwardAuth(cred, host), SandboxConfig: sandbox}
		resp, err := s.containerd.cri.PullImage(ctx, fwd)
		if err == nil && s.cfg.EnsureSecretPulledImages {
			err = s.verifyForwarded(ctx, ref, resp.GetImageRef(), pa)
		}
		if err == nil {
			if cred.Ref != "" {
				s.labelAfterPull(ctx, ref.String(), resp.GetImageRef(), s.snapshotterFor(req), cred.Ref)
			}
			return resp.GetImageRef(), nil
		}
		if !rejected(err) {
			return "", err
		}
		fields := log.Fields{"image": ref.String(), "credential_source": cred.Source}
		if !renewed && pa.renew(ctx, host, cred) {
			renewed = true
			log.G(ctx).WithFields(fields).
				Info("b9-resolver: registry rejected the credential; retrying once with a freshly minted one")
			continue
		}
		if !pa.fallback(ctx, host) {
			return "", err
		}
		renewed = false
		log.G(ctx).WithFields(fields).
			Info("b9-resolver: registry rejected the credential; trying the next source (isolation fallback)")
	}
}

// forwardAuth is the AuthConfig containerd's CRI turns back into
// (username, secret) for the host: ParseAuth compares server_address's URL
// host with the request host, which for Docker Hub is its API host.
func forwardAuth(cred keychain.Credential, host string) *runtime.AuthConfig {
	if cred.Anonymous || cred.Secret.IsZero() {
		return nil
	}
	apiHost := host
	if host == registry.DockerHubHost {
		apiHost = registry.DockerHubAPIHost
	}
	a := &runtime.AuthConfig{ServerAddress: "https://" + apiHost}
	if cred.IdentityToken {
		a.IdentityToken = cred.Secret.Reveal()
	} else {
		a.Username, a.Password = cred.Username, cred.Secret.Reveal()
	}
	return a
}

// withoutCredentialAnnotations copies the sandbox config minus our
// credential annotations: containerd has no use for them, and a secret
// not sent cannot be logged there.
func withoutCredentialAnnotations(sc *runtime.PodSandboxConfig, prefix string) *runtime.PodSandboxConfig {
	if sc == nil || !hasCredentialAnnotation(sc.GetAnnotations(), prefix) {
		return sc
	}
	out := proto.Clone(sc).(*runtime.PodSandboxConfig)
	dropCredentialAnnotations(out.Annotations, prefix)
	return out
}

// imageSpecWithoutCredentials is withoutCredentialAnnotations for an
// ImageSpec: kubelet copies every pod annotation into the ImageSpec of
// ImageStatus and PullImage.
func imageSpecWithoutCredentials(spec *runtime.ImageSpec, prefix string) *runtime.ImageSpec {
	if spec == nil || !hasCredentialAnnotation(spec.GetAnnotations(), prefix) {
		return spec
	}
	out := proto.Clone(spec).(*runtime.ImageSpec)
	dropCredentialAnnotations(out.Annotations, prefix)
	return out
}

func isCredentialAnnotation(k, prefix string) bool {
	key := prefix + document.AnnotationName
	return k == key || strings.HasPrefix(k, key+".")
}

func hasCredentialAnnotation(annotations map[string]string, prefix string) bool {
	for k := range annotations {
		if isCredentialAnnotation(k, prefix) {
			return true
		}
	}
	return false
}

func dropCredentialAnnotations(annotations map[string]string, prefix string) {
	for k := range annotations {
		if isCredentialAnnotation(k, prefix) {
			delete(annotations, k)
		}
	}
}
