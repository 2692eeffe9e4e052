package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/cache"
	"github.com/beam-cloud/b9-resolver/internal/imageaccess"
	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/metrics"
	"github.com/beam-cloud/b9-resolver/internal/resolver"
	"github.com/beam-cloud/b9-resolver/internal/sealed"
	"github.com/beam-cloud/b9-resolver/internal/unixsock"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
)

// Service is the b9 CRI image service. Build it with New, serve it with
// Start, stop it with Close.
type Service struct {
	runtime.UnimplementedImageServiceServer

	opts     options
	cfg      *settings
	keychain *keychain.Keychain
	node     chain.Chain
	// identities open sealed annotation documents; nil without
	// sealed.identity_files.
	identities *sealed.Keyring
	// containerd is the containerd client (namespace k8s.io) for direct
	// pulls and containerd's CRI image service, for forwarding: in process
	// in plugin mode, over containerd_address in standalone mode.
	containerd containerdConn
	// pull is how direct pulls fetch and unpack: CRI's image settings with
	// the b9 table's overrides.
	pull pullSettings

	flights *cache.Group[string, pulled]
	// resolver makes each direct pull's registry hosts (hosts.toml,
	// config_path) around one node-wide Authorizer.
	resolver *resolver.Resolver

	// background is work a call leaves behind (forward mode's snapshot
	// labels); Close waits for it.
	background sync.WaitGroup

	mu      sync.Mutex
	sockets []servingSocket // the b9 socket first
	closed  bool
	// extra registers more services on the socket (AddService).
	extra []func(*grpc.Server)
	// credentials registers the Credentials service alone, for
	// credentials_address.
	credentials func(*grpc.Server)
	// accessMu guards pulling (ensure_secret_pulled_images).
	accessMu sync.Mutex
	pulling  map[string]int // names being pulled, by count
	// images is containerd's image store (k8s.io is set per call).
	images images.Store
	// access are the ensure_secret_pulled_images records: who may use
	// which repository's image (in memory only when ensure is off).
	access *imageaccess.Store
}

// Option configures a Service.
type Option func(*options)

type options struct {
	keychainOpts []keychain.Option
	serverOpts   []grpc.ServerOption
	onPulled     []func(context.Context, Pulled)
	inProcess    *InProcess
	criImages    *CRIImageSettings
}

// WithKeychainOptions adds keychain options, such as the cloud providers
// (keychain.WithProvider) a build enables.
func WithKeychainOptions(opts ...keychain.Option) Option {
	return func(o *options) { o.keychainOpts = append(o.keychainOpts, opts...) }
}

// WithServerOptions adds options to the b9 socket's gRPC server, such as
// the Credentials service's peer-credential transport.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.serverOpts = append(o.serverOpts, opts...) }
}

// WithOnPulled calls fn after every successful PullImage, with the
// credential the image's registry accepted (the Credentials service
// records it for lazy-loading snapshotters). fn must not block.
func WithOnPulled(fn func(context.Context, Pulled)) Option {
	return func(o *options) { o.onPulled = append(o.onPulled, fn) }
}

// Pulled is what a successful pull tells WithOnPulled callbacks. It holds
// the source document, which carries secrets: keep it, never print it.
type Pulled struct {
	Image   registry.Reference
	ImageID string
	// Credential was presented to the image's registry (Anonymous when
	// none applied). Its Ref is the b9.credential-ref snapshot label.
	Credential keychain.Credential
	// Document is Credential's source; nil for an identity token (which
	// has no document form) and for an anonymous pull with no document.
	Document *document.Document
	// PodNamespace is the namespace of the pod the pull was for ("" when
	// the request named none): the tenant its record counts against.
	PodNamespace string
}

// New validates cfg and builds the service. It does not listen and does
// not contact containerd.
func New(cfg Config, opts ...Option) (*Service, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cloudOpts, err := cloudProviders(s.Cloud)
	if err != nil {
		return nil, fmt.Errorf("b9-resolver config: cloud: %w", err)
	}
	kopts := append([]keychain.Option{
		keychain.WithCacheSize(s.CacheSize),
		keychain.WithRefreshFraction(s.RefreshFraction),
		keychain.WithMintTimeout(s.mintTimeout),
	}, cloudOpts...)
	// The Credentials service's records, opened first: with a state dir
	// they persist, and the refs they are looked up by (snapshot labels)
	// must then be the same after a restart, so the keychain's ref key
	// comes from the node key. Memory-only records keep the keychain's
	// random per-process key.
	store, err := credentials.NewStore(context.Background(), credentials.StoreConfig{StateDir: s.StateDir,
		MaxRecords: s.CredentialsMaxRecords, MaxRecordsPerSource: s.CredentialsMaxRecordsPerSource})
	if err != nil {
		return nil, fmt.Errorf("b9-resolver: credentials service: %w", err)
	}
	if k := store.RefKey(); k != nil {
		kopts = append(kopts, keychain.WithRefKey(k))
	}
	// Fingerprints (ListCredentials, logs) are an HMAC under a key from
	// the same node key, so ctr-b9 --node-key shows the same ones; without
	// a node key, under the keychain's random per-process key.
	if k := store.FingerprintKey(); k != nil {
		kopts = append(kopts, keychain.WithFingerprintKey(k))
	}
	// Options given to New come last, so they can replace a provider.
	kopts = append(kopts, o.keychainOpts...)

	var identities *sealed.Keyring
	if files := s.Sealed.IdentityFiles; len(files) > 0 {
		identities, err = sealed.NewKeyring(files,
			sealed.WithReloadErrors(func(path string, err error) {
				log.L.WithError(err).WithField("path", path).Error("b9-resolver: sealed.identity_files: file refused; sealed documents for its identities will not open")
			}),
			sealed.WithReloaded(func(recipients []string) {
				log.L.WithField("recipients", recipients).Info("b9-resolver: sealed.identity_files changed; identities reloaded")
			}))
		if err != nil {
			return nil, fmt.Errorf("b9-resolver config: sealed.identity_files: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}

	criImages := o.criImages
	if o.inProcess != nil && o.inProcess.CRIImages != nil {
		criImages = o.inProcess.CRIImages
	}
	pull, err := s.pullSettings(criImages)
	if err != nil {
		return nil, err
	}
	// The settings were validated above under their own key names; an
	// option refused here is a value validate let through.
	kc, err := keychain.New(kopts...)
	if err != nil {
		return nil, fmt.Errorf("b9-resolver: keychain: %w", err)
	}
	res, err := resolver.New(
		resolver.WithConfigPath(s.ConfigPath),
		resolver.WithDetector(s.detector),
		resolver.WithTrustedMirrors(s.TrustedMirrors...),
	)
	if err != nil {
		kc.Close()
		return nil, fmt.Errorf("b9-resolver: resolver: %w", err)
	}
	conn, err := connectContainerd(o.inProcess, s.ContainerdAddress)
	if err != nil {
		kc.Close()
		return nil, err
	}
	svc := &Service{
		identities: identities,
		opts:       o,
		cfg:        s,
		keychain:   kc,
		node:       nodeChain(s),
		flights:    newPullFlights[pulled](),
		resolver:   res,
		containerd: conn,
		pull:       pull,
	}
	svc.images = conn.client.ImageService()
	// With a state dir the records survive restarts, sealed under a key
	// derived from the node key.
	acfg := imageaccess.Config{}
	if dir := store.StateDir(); dir != "" && s.EnsureSecretPulledImages {
		acfg.Path, acfg.Key = filepath.Join(dir, imageaccess.FileName), store.ImageAccessKey()
	}
	if svc.access, err = imageaccess.Open(context.Background(), acfg); err != nil {
		svc.Close()
		return nil, fmt.Errorf("b9-resolver: ensure_secret_pulled_images records: %w", err)
	}
	if err := svc.withCredentialsService(store); err != nil {
		svc.Close()
		return nil, fmt.Errorf("b9-resolver: credentials service: %w", err)
	}
	return svc, nil
}

// maxMsgSize matches containerd's CRI limit: ListImages on a node with many
// images is large.
const maxMsgSize = 16 << 20

// socketWindow is a fixed HTTP/2 flow-control window for the server's
// receiving side: requests are small, and a fixed size disables BDP probing.
const socketWindow = 1 << 20

// Address is the socket the service listens on.
func (s *Service) Address() string { return s.cfg.Address }

// PullMode is the configured pull mode.
func (s *Service) PullMode() PullMode { return s.cfg.PullMode }

// Keychain is the service's credential cache (for the Credentials service
// and `ctr-b9 cache`).
func (s *Service) Keychain() *keychain.Keychain { return s.keychain }

// AddService registers another gRPC service on the b9 socket, such as the
// Credentials service (for remote snapshotters), which needs this Service's keychain
// and so is built after New. Call it before Start.
func (s *Service) AddService(register func(*grpc.Server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = append(s.extra, register)
}

// Start listens on the socket and serves in the background.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("b9-resolver: service is closed")
	}
	if len(s.sockets) > 0 {
		return errors.New("b9-resolver: service already started")
	}
	b9, err := s.serve(ctx, s.cfg.Address, nil, func(srv *grpc.Server) {
		runtime.RegisterImageServiceServer(srv, s)
		for _, register := range s.extra {
			register(srv)
		}
	})
	if err != nil {
		return err
	}
	s.sockets = append(s.sockets, b9)
	log.G(ctx).WithFields(log.Fields{
		"address": s.cfg.Address, "pull_mode": s.cfg.PullMode, "containerd": s.containerd.name,
		"snapshotter": s.snapshotterName(""), "isolation": s.cfg.Isolation,
		"max_concurrent_downloads": s.pull.maxConcurrentDownloads, "max_concurrent_unpacks": max(s.pull.maxConcurrentUnpacks, 1),
		"snapshot_annotations": s.pull.snapshotAnnotations,
	}).Info("b9-resolver: CRI image service serving")
	if s.identities != nil {
		log.G(ctx).WithFields(log.Fields{"recipients": s.identities.Recipients(), "require": s.cfg.Sealed.Require}).
			Info("b9-resolver: sealed documents: identities loaded")
	}

	switch addr := s.cfg.CredentialsAddress; {
	case addr != "":
		// serverOpts carry the peer-uid transport credentials.
		creds, err := s.serve(ctx, addr, []unixsock.Option{unixsock.WithGroup(s.cfg.CredentialsGID)}, s.credentials)
		if err != nil {
			return err
		}
		s.sockets = append(s.sockets, creds)
		log.G(ctx).WithFields(log.Fields{"address": addr, "gid": s.cfg.CredentialsGID, "uids": s.cfg.CredentialsUIDs}).
			Info("b9-resolver: Credentials service serving on its own socket")
	case len(s.cfg.CredentialsUIDs) > 0:
		log.G(ctx).WithField("uids", s.cfg.CredentialsUIDs).
			Warn("b9-resolver: credentials_uids are set but the b9 socket is root-only; set credentials_address (and credentials_gid) so those uids can connect")
	}
	return nil
}

// countCalls counts every unary call on the b9 sockets by method and code.
func countCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	metrics.Call(info.FullMethod, err)
	return resp, err
}

// servingSocket is one socket and the server answering on it.
type servingSocket struct {
	addr   string
	server *grpc.Server
}

// serve listens on addr and serves what register puts on a new server.
func (s *Service) serve(ctx context.Context, addr string, lopts []unixsock.Option, register func(*grpc.Server)) (servingSocket, error) {
	l, err := unixsock.Listen(ctx, addr, lopts...)
	if err != nil {
		return servingSocket{}, fmt.Errorf("b9-resolver: %w", err)
	}
	// Stream workers reuse goroutines across calls: CLIP asks for
	// credentials on every layer fetch, and a goroutine per call showed in
	// the round trip's tail (p99 ~330 -> ~280 µs on 2 cores). A fixed flow
	// control window turns off grpc-go's BDP probing, a PING and its ack
	// on every call, which a unix socket gains nothing from.
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize),
		grpc.NumStreamWorkers(uint32(goruntime.GOMAXPROCS(0))),
		grpc.InitialWindowSize(socketWindow), grpc.InitialConnWindowSize(socketWindow),
		grpc.ChainUnaryInterceptor(countCalls)},
		s.opts.serverOpts...)...)
	register(srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.G(ctx).WithError(err).WithField("address", addr).Error("b9-resolver: serving stopped")
		}
	}()
	return servingSocket{addr: addr, server: srv}, nil
}

// Close stops serving (letting running calls finish for a few seconds),
// which removes the sockets, and closes the containerd connections. It
// satisfies io.Closer, which containerd calls on its plugins at shutdown.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sockets := s.sockets
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, sock := range sockets {
		wg.Go(func() {
			done := make(chan struct{})
			go func() { sock.server.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				sock.server.Stop()
			}
			// Nothing to remove: the listener unlinked its socket as it
			// closed, before it stopped answering. By now a successor may
			// listen at the same path (a rolling upgrade), and that
			// socket is not ours.
		})
	}
	wg.Wait()
	s.background.Wait()
	s.keychain.Close()
	var aerr error
	if s.access != nil {
		aerr = s.access.Close()
	}
	return errors.Join(aerr, s.containerd.close())
}

// NodeCredential is the node's own credential for a registry (config
// documents, document files, docker config.json), resolved through the
// keychain; found is false when the node has none. The Credentials
// service falls back to it for hosts no pull recorded.
func (s *Service) NodeCredential(ctx context.Context, reg registry.Registry, _ string) (keychain.Credential, bool, error) {
	cands := s.node.For(chain.Query{Host: reg.Host, ImageHost: reg.Host})
	r, err := chain.Walk(ctx, s.keychain, reg, cands, 0, true, nil)
	if err != nil || r.Index < 0 {
		return keychain.Credential{}, false, err
	}
	return r.Cred, true, nil
}
