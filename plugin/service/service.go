package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/dialer"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// Service is the b9 CRI image service. Build it with New, serve it with
// Start, stop it with Close.
type Service struct {
	runtime.UnimplementedImageServiceServer

	cfg      *settings
	keychain *keychain.Keychain
	node     *nodeCredentials
	// client is the containerd client (namespace k8s.io) for direct pulls;
	// cri is containerd's CRI image service, for forwarding. Both dial
	// lazily: in plugin mode containerd is not serving yet when New runs.
	client *containerd.Client
	criCon *grpc.ClientConn
	cri    runtime.ImageServiceClient

	flights flightGroup
	// hosts builds the registry hosts of one direct pull; see hosts.go.
	hosts hostsFunc

	mu       sync.Mutex
	server   *grpc.Server
	listener net.Listener
	closed   bool
}

// Option configures a Service.
type Option func(*options)

type options struct {
	keychainOpts []keychain.Option
}

// WithKeychainOptions adds keychain options, such as the cloud providers
// (keychain.WithProvider) a build enables.
func WithKeychainOptions(opts ...keychain.Option) Option {
	return func(o *options) { o.keychainOpts = append(o.keychainOpts, opts...) }
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
	kopts := append([]keychain.Option{
		keychain.WithCacheSize(s.CacheSize),
		keychain.WithRefreshFraction(s.RefreshFraction),
		keychain.WithMintTimeout(s.mintTimeout),
	}, o.keychainOpts...)

	// client.New and grpc.NewClient only dial on the first call.
	client, err := containerd.New(s.ContainerdAddress, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		return nil, fmt.Errorf("b9-resolver: containerd client for %s: %w", s.ContainerdAddress, err)
	}
	criCon, err := grpc.NewClient(dialer.DialAddress(s.ContainerdAddress),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("b9-resolver: CRI client for %s: %w", s.ContainerdAddress, err)
	}
	svc := &Service{
		cfg:      s,
		keychain: keychain.New(kopts...),
		node: &nodeCredentials{
			docs: s.nodeDocs, files: s.NodeCredentials.DocumentFiles, dockerConfig: s.NodeCredentials.DockerConfig,
			detector: s.detector, helperTimeout: s.mintTimeout,
		},
		client: client,
		criCon: criCon,
		cri:    runtime.NewImageServiceClient(criCon),
	}
	svc.hosts = svc.registryHosts
	return svc, nil
}

// maxMsgSize matches containerd's CRI limit: ListImages on a node with many
// images is large.
const maxMsgSize = 16 << 20

// Address is the socket the service listens on.
func (s *Service) Address() string { return s.cfg.Address }

// PullMode is the configured pull mode.
func (s *Service) PullMode() PullMode { return s.cfg.PullMode }

// Keychain is the service's credential cache (for the Credentials service
// and `ctr-b9 cache`).
func (s *Service) Keychain() *keychain.Keychain { return s.keychain }

// Start listens on the socket and serves in the background.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("b9-resolver: service is closed")
	}
	if s.server != nil {
		return errors.New("b9-resolver: service already started")
	}
	l, err := listen(ctx, s.cfg.Address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize))
	runtime.RegisterImageServiceServer(srv, s)
	s.server, s.listener = srv, l
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.G(ctx).WithError(err).Error("b9-resolver: serving stopped")
		}
	}()
	log.G(ctx).WithFields(log.Fields{
		"address": s.cfg.Address, "pull_mode": s.cfg.PullMode, "containerd": s.cfg.ContainerdAddress,
		"snapshotter": s.snapshotterName(""), "isolation": s.cfg.Isolation,
	}).Info("b9-resolver: CRI image service serving")
	return nil
}

// Close stops serving (letting running calls finish for a few seconds),
// removes the socket and closes the containerd connections. It satisfies
// io.Closer, which containerd calls on its plugins at shutdown.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, l := s.server, s.listener
	s.mu.Unlock()

	if srv != nil {
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
	}
	if l != nil {
		removeSocket(s.cfg.Address)
	}
	s.keychain.Close()
	return errors.Join(s.criCon.Close(), s.client.Close())
}
