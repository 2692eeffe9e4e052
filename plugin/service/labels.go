package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxConfigSize bounds the image config labelling reads: configs are a
// few KiB, and one of megabytes is not a pull's to parse here.
const maxConfigSize = 4 << 20

// labelTimeout bounds one image's labelling in the background.
const labelTimeout = 30 * time.Second

// labelAfterPull labels, in the background, the layer snapshots of the
// image id that containerd's CRI pulled (forward mode) with the credential
// ref, as a direct pull's Prepare does. The pull's answer does not wait:
// in forward mode CRI has unpacked every layer already, so nothing reads
// the label before this sets it but a remote snapshotter asking later; one
// that needs the ref at Prepare time wants direct mode. Close waits for
// labelling under way.
func (s *Service) labelAfterPull(ctx context.Context, imageRef, id, snapshotter, ref string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), labelTimeout)
	s.background.Go(func() {
		defer cancel()
		if err := s.labelCredentialRef(ctx, id, snapshotter, ref); err != nil {
			// The image stands without the label: it only lets a remote
			// snapshotter ask for this credential by ref.
			log.G(ctx).WithField("image", imageRef).WithError(err).Warn("b9-resolver: pulled, but the layer snapshots are not labelled")
		}
	})
}

// labelCredentialRef puts CredentialRefLabel on the layer snapshots of
// the image whose config is id, in snapshotter. A layer that carries a
// ref already keeps it, as in direct mode, where a shared layer is
// unpacked once, by its first puller.
func (s *Service) labelCredentialRef(ctx context.Context, id, snapshotter, ref string) error {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	dgst, err := digest.Parse(id)
	if err != nil {
		return fmt.Errorf("credential-ref label: image id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	// ReaderAt learns the size itself (the content API's Info): no Info
	// of our own before it.
	ra, err := s.containerd.client.ContentStore().ReaderAt(ctx, ocispec.Descriptor{Digest: dgst})
	if err != nil {
		return fmt.Errorf("credential-ref label: config %s: %w", dgst, err)
	}
	defer ra.Close()
	if ra.Size() > maxConfigSize {
		return fmt.Errorf("credential-ref label: config %s is %d bytes: %w", dgst, ra.Size(), errdefs.ErrFailedPrecondition)
	}
	b, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		return fmt.Errorf("credential-ref label: config %s: %w", dgst, err)
	}
	var config ocispec.Image
	if err := json.Unmarshal(b, &config); err != nil {
		return fmt.Errorf("credential-ref label: config %s: %w", dgst, errdefs.ErrDataLoss)
	}
	chainIDs := identity.ChainIDs(config.RootFS.DiffIDs)
	if len(chainIDs) == 0 {
		return nil
	}
	// One walk for every layer: each filter is one snapshot's name, and
	// a snapshot matching any of them is listed.
	filters := make([]string, len(chainIDs))
	for i, c := range chainIDs {
		filters[i] = "name==" + c.String()
	}
	sn := s.containerd.client.SnapshotService(snapshotter)
	var unlabelled []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels[CredentialRefLabel] == "" {
			unlabelled = append(unlabelled, info.Name)
		}
		return nil
	}, filters...)
	if err != nil {
		return fmt.Errorf("credential-ref label: snapshots in %s: %w", snapshotter, err)
	}
	field := "labels." + CredentialRefLabel
	for _, name := range unlabelled {
		_, err := sn.Update(ctx, snapshots.Info{Name: name, Labels: map[string]string{CredentialRefLabel: ref}}, field)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("credential-ref label: snapshot %s in %s: %w", name, snapshotter, err)
		}
	}
	return nil
}
