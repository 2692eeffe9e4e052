package credentials

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	credentialsv1 "github.com/beam-cloud/b9-resolver/api/credentials/v1"
	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// NodeCredentialsFunc returns the node's own credential for a registry
// (config documents, docker config.json, ambient cloud identity), minted
// or cached by the caller; found is false when the node has none. It is
// asked only when no pull recorded a credential for the host/repository.
type NodeCredentialsFunc func(ctx context.Context, reg registry.Registry, repository string) (cred keychain.Credential, found bool, err error)

// Config wires a Server.
type Config struct {
	// Keychain re-mints answers from the recorded source documents; the
	// CRI service's keychain, so a pull and a lazy read share one cache.
	Keychain *keychain.Keychain
	// Store holds the pull records.
	Store *Store
	// Detector classifies hosts (with the plugin's host mappings); nil
	// uses the built-in table.
	Detector *registry.Detector
	// NodeCredentials may be nil: no node fallback.
	NodeCredentials NodeCredentialsFunc
	// AllowedUIDs may call besides root.
	AllowedUIDs []uint32
}

// Server is the Credentials gRPC service.
type Server struct {
	credentialsv1.UnimplementedCredentialsServer

	kc       *keychain.Keychain
	store    *Store
	detector *registry.Detector
	node     NodeCredentialsFunc
	allowed  map[uint32]bool
}

// NewServer checks cfg and returns the service; Register puts it on a
// grpc.Server built with grpc.Creds(PeerCredentials()).
func NewServer(cfg Config) (*Server, error) {
	if cfg.Keychain == nil || cfg.Store == nil {
		return nil, fmt.Errorf("credentials service: keychain and store are required: %w", errdefs.ErrInvalidArgument)
	}
	s := &Server{kc: cfg.Keychain, store: cfg.Store, detector: cfg.Detector, node: cfg.NodeCredentials, allowed: map[uint32]bool{}}
	for _, uid := range cfg.AllowedUIDs {
		s.allowed[uid] = true
	}
	return s, nil
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { credentialsv1.RegisterCredentialsServer(g, s) }

// Query is what a caller asks for; see GetCredentialsRequest.
type Query struct {
	Host, Repository, ImageRef, CredentialRef string
}

// Lookup applies the lookup rules:
//
//  1. CredentialRef set: exactly the credential recorded under it, for the
//     host it was recorded for; anything else is NotFound. It never falls
//     through to other rules, so a ref can only ever yield its own pull's
//     secret.
//  2. The most recent credential that successfully pulled host/repository.
//  3. The node's credential, if NodeCredentials is set and has one.
//  4. NotFound.
//
// A recorded public document answers anonymous (rule 1 or 2), which
// callers must take as "no credentials", not as a reason to fall back.
// Each answer is resolved through the keychain from the source document:
// cached while usable, re-minted when near expiry.
func (s *Server) Lookup(ctx context.Context, q Query) (keychain.Credential, error) {
	host, repository, err := s.target(q)
	if err != nil {
		return keychain.Credential{}, err
	}
	if q.CredentialRef != "" {
		// A ref is good for the registries it pulled from only: a
		// snapshotter must not carry one tenant's secret elsewhere. One
		// ref can have pulled from several hosts of a cache scope (ECR
		// accounts of a region), each with its own record.
		r, ok := s.store.byCredentialRef(q.CredentialRef, host)
		if !ok {
			if s.store.refKnown(q.CredentialRef) {
				return keychain.Credential{}, fmt.Errorf("credential_ref was not recorded for registry %s: %w", host, errdefs.ErrNotFound)
			}
			return keychain.Credential{}, fmt.Errorf("%s: %w", errUnknownRef.Error(), errdefs.ErrNotFound)
		}
		cred, err := s.resolve(ctx, r)
		if err != nil {
			return keychain.Credential{}, err
		}
		if cred.Ref != "" && cred.Ref != q.CredentialRef {
			// The recorded document no longer resolves to the credential
			// the ref names (the CRI service recorded a mismatched pair):
			// answering would hand out a credential the ref does not name.
			return keychain.Credential{}, fmt.Errorf("credential_ref does not match the recorded credential: %w", errdefs.ErrFailedPrecondition)
		}
		return cred, nil
	}
	if repository != "" {
		if r, ok := s.store.latest(host, repository); ok {
			return s.resolve(ctx, r)
		}
	}
	if s.node != nil {
		cred, found, err := s.node(ctx, s.detector.Detect(host), repository)
		if err != nil {
			return keychain.Credential{}, fmt.Errorf("node credentials for %s: %w", host, err)
		}
		if found {
			return cred, nil
		}
	}
	return keychain.Credential{}, fmt.Errorf("%s (%s/%s): %w", errNoRecord.Error(), host, repository, errdefs.ErrNotFound)
}

// target is the canonical host and repository of q.
func (s *Server) target(q Query) (host, repository string, err error) {
	host, repository = q.Host, q.Repository
	if q.ImageRef != "" && (host == "" || repository == "") {
		ref, err := s.detector.ParseReference(q.ImageRef)
		if err != nil {
			return "", "", fmt.Errorf("image_ref: %w", err)
		}
		if host == "" {
			host = ref.Registry.Host
		}
		if repository == "" {
			repository = ref.Repository
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("host (or image_ref) is required: %w", errdefs.ErrInvalidArgument)
	}
	// CLIP asks for index.docker.io, containerd for registry-1.docker.io;
	// pulls are recorded under docker.io.
	host, err = registry.NormalizeHost(host)
	if err != nil {
		return "", "", fmt.Errorf("host: %w", err)
	}
	return host, normalizeRepository(host, repository), nil
}

func (s *Server) resolve(ctx context.Context, r *record) (keychain.Credential, error) {
	if r.doc.Type == document.TypePublic {
		return keychain.Anonymous(r.reg), nil
	}
	cred, err := s.kc.Resolve(ctx, r.reg, r.doc)
	if err != nil {
		return keychain.Credential{}, fmt.Errorf("re-mint recorded credential: %w", err)
	}
	return cred, nil
}

// GetCredentials implements the RPC.
func (s *Server) GetCredentials(ctx context.Context, req *credentialsv1.GetCredentialsRequest) (*credentialsv1.GetCredentialsResponse, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cred, err := s.Lookup(ctx, Query{
		Host: req.GetHost(), Repository: req.GetRepository(), ImageRef: req.GetImageRef(), CredentialRef: req.GetCredentialRef(),
	})
	if err != nil {
		if !errdefs.IsNotFound(err) && !errors.Is(err, context.Canceled) {
			logger(ctx).WithError(err).WithField("host", req.GetHost()).WithField("repository", req.GetRepository()).
				Warn("credentials service: lookup failed")
		}
		return nil, errgrpc.ToGRPC(err)
	}
	resp := &credentialsv1.GetCredentialsResponse{
		Username: cred.Username, Secret: cred.Secret.Reveal(), IdentityToken: cred.IdentityToken,
		Anonymous: cred.Anonymous, CredentialRef: cred.Ref, Source: cred.Source,
	}
	if cred.Anonymous {
		resp.Username, resp.Secret, resp.IdentityToken = "", "", false
	}
	if !cred.ExpiresAt.IsZero() {
		resp.ExpiresAt = timestamppb.New(cred.ExpiresAt)
	}
	return resp, nil
}

// ListCredentials implements the RPC: the keychain's cache, redacted.
func (s *Server) ListCredentials(ctx context.Context, _ *credentialsv1.ListCredentialsRequest) (*credentialsv1.ListCredentialsResponse, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	entries := s.kc.Entries()
	out := &credentialsv1.ListCredentialsResponse{Entries: make([]*credentialsv1.CredentialEntry, 0, len(entries))}
	for _, e := range entries {
		ce := &credentialsv1.CredentialEntry{
			Host: e.Host, Kind: string(e.Kind), Source: e.Source, Provider: e.Provider,
			Fingerprint: e.Fingerprint, CredentialRef: e.Ref, Type: string(e.Type),
		}
		if !e.ExpiresAt.IsZero() {
			ce.ExpiresAt = timestamppb.New(e.ExpiresAt)
		}
		out.Entries = append(out.Entries, ce)
	}
	return out, nil
}
