package service

import (
	"context"
	"maps"
	"slices"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/beam-cloud/b9-resolver/plugin/credentials"
)

// withCredentialsService puts the Credentials service on the
// b9 socket: remote snapshotters ask it, by the b9.credential-ref label of
// a layer, for the credential that pulled it. Every successful pull is
// recorded in its Store — the source document, so answers are re-minted
// and a lazy read hours later still gets a live token. The socket's peer
// uid is read for every connection; only root and credentials_uids get
// credentials (the CRI calls are guarded by the socket's 0600). New opens
// store before the keychain, whose ref key it provides.
func (s *Service) withCredentialsService(store *credentials.Store) error {
	srv, err := credentials.NewServer(credentials.Config{
		Keychain: s.keychain, Store: store, Detector: s.cfg.detector,
		NodeCredentials: s.NodeCredential, AllowedUIDs: s.cfg.CredentialsUIDs,
	})
	if err != nil {
		return err
	}
	s.opts.serverOpts = append(s.opts.serverOpts, grpc.Creds(credentials.PeerCredentials()))
	s.AddService(srv.Register)
	s.credentials = srv.Register
	if s.cfg.PullMode == PullDirect {
		// Direct pulls label layer snapshots with their ref: a record whose
		// ref is still on one is never evicted. (Forward mode sets no
		// labels; its records are bounded by age and source alone.)
		store.SetLiveRefs(s.liveCredentialRefs)
	}
	s.opts.onPulled = append(s.opts.onPulled, func(ctx context.Context, p Pulled) {
		if p.Document == nil {
			// Nothing to re-mint from: an identity token, or anonymous.
			return
		}
		if err := store.Record(p.Credential.Ref, p.Image.Registry, p.Image.Repository, *p.Document, credentials.InNamespace(p.PodNamespace)); err != nil {
			// The pull succeeded; a lazy snapshotter then falls back to the
			// next pull's record or its own keychain.
			log.G(ctx).WithError(err).WithField("image", p.Image.String()).Warn("b9-resolver: recording the pull's credential failed")
		}
	})
	return nil
}

// liveCredentialRefs lists the credential refs on the snapshots of every
// snapshotter direct pulls unpack into (the default one and the runtime
// handlers'), in the k8s.io namespace.
func (s *Service) liveCredentialRefs(ctx context.Context) (map[string]struct{}, error) {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	sns := map[string]snapshots.Snapshotter{}
	for _, name := range append(slices.Collect(maps.Values(s.pull.runtimeSnapshotters)), s.pull.snapshotter) {
		sns[name] = s.containerd.client.SnapshotService(name)
	}
	return credentials.SnapshotRefs(ctx, sns)
}
