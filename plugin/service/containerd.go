package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/dialer"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// InProcess is the containerd the service runs inside (plugin mode): its
// services called as Go values, with no socket between them. The plugin
// builds it from its InitContext, as containerd's own CRI plugins do.
type InProcess struct {
	// Client is a containerd client over containerd's in-memory services
	// (client.WithInMemoryServices), default namespace k8s.io: content,
	// images, leases, snapshots and diff are called in process.
	Client *containerd.Client
	// CRI is containerd's CRI image service (the io.containerd.cri.v1.images
	// plugin's GRPCService): forwarded calls and forward-mode pulls go to
	// it directly.
	CRI runtime.ImageServiceServer
	// UpdateImage, if set, refreshes CRI's in-memory image index for a name
	// just created or updated, as CRI's own PullImage does, so the image is
	// listed at once rather than when CRI handles the image event.
	UpdateImage func(ctx context.Context, name string) error
	// CRIImages are CRI's image settings, which direct pulls follow unless
	// the b9 table overrides them.
	CRIImages *CRIImageSettings
}

// WithInProcess makes the service use the containerd it runs in instead of
// dialling containerd_address. Only the plugin uses it: a process must not
// dial its own socket (every blob would cross the content API), and the
// socket is not served until every plugin has loaded.
func WithInProcess(ip InProcess) Option {
	return func(o *options) { o.inProcess = &ip }
}

// WithCRIImageSettings gives the service CRI's image settings when it is
// not in process (standalone mode reads them from containerd's config).
func WithCRIImageSettings(c *CRIImageSettings) Option {
	return func(o *options) { o.criImages = c }
}

// criImageService is what the service calls of containerd's CRI image
// service: runtime.ImageServiceServer's methods.
type criImageService interface {
	PullImage(context.Context, *runtime.PullImageRequest) (*runtime.PullImageResponse, error)
	ListImages(context.Context, *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error)
	ImageStatus(context.Context, *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error)
	RemoveImage(context.Context, *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error)
	ImageFsInfo(context.Context, *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error)
	StreamImages(*runtime.StreamImagesRequest, grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error
}

// containerdConn is what the service uses of containerd: the client for
// direct pulls and CRI's image service for everything it forwards.
type containerdConn struct {
	client      *containerd.Client
	cri         criImageService
	updateImage func(ctx context.Context, name string) error
	close       func() error
	// name is for the log: "in process" or the socket.
	name string
}

// connectContainerd returns the in-process containerd, or clients of the
// one at addr (standalone). The clients dial lazily, on the first call.
func connectContainerd(ip *InProcess, addr string) (containerdConn, error) {
	if ip != nil {
		if ip.Client == nil || ip.CRI == nil {
			return containerdConn{}, errors.New("b9-resolver: in-process containerd without a client or CRI image service")
		}
		return containerdConn{client: ip.Client, cri: localCRI{ip.CRI}, updateImage: ip.UpdateImage, close: ip.Client.Close, name: "in process"}, nil
	}
	client, err := containerd.New(addr, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		return containerdConn{}, fmt.Errorf("b9-resolver: containerd client for %s: %w", addr, err)
	}
	criCon, err := grpc.NewClient(dialer.DialAddress(addr),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		client.Close()
		return containerdConn{}, fmt.Errorf("b9-resolver: CRI client for %s: %w", addr, err)
	}
	return containerdConn{
		client: client,
		cri:    remoteCRI{runtime.NewImageServiceClient(criCon)},
		close:  func() error { return errors.Join(criCon.Close(), client.Close()) },
		name:   addr,
	}, nil
}

// localCRI calls containerd's CRI image service in process the way
// containerd's CRI gRPC server does: in namespace k8s.io, with errors as
// gRPC statuses (so forward mode classifies them as it would over the
// wire) and URLs in them stripped of their queries (signed blob URLs).
type localCRI struct{ srv runtime.ImageServiceServer }

func inNamespace(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, Namespace)
}

// criErr is containerd's CRI server's error treatment.
func criErr(err error) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.RawQuery != "" {
			u.RawQuery = "REDACTED"
			err = &redactedURLError{err: err, from: ue.URL, to: u.String()}
		}
	}
	return errgrpc.ToGRPC(err)
}

// redactedURLError keeps err's class and chain with the URL's query cut.
type redactedURLError struct {
	err      error
	from, to string
}

func (e *redactedURLError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.from, e.to)
}
func (e *redactedURLError) Unwrap() error { return e.err }

func (l localCRI) PullImage(ctx context.Context, req *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	resp, err := l.srv.PullImage(inNamespace(ctx), req)
	return resp, criErr(err)
}

func (l localCRI) ListImages(ctx context.Context, req *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	resp, err := l.srv.ListImages(inNamespace(ctx), req)
	return resp, criErr(err)
}

func (l localCRI) ImageStatus(ctx context.Context, req *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	resp, err := l.srv.ImageStatus(inNamespace(ctx), req)
	return resp, criErr(err)
}

func (l localCRI) RemoveImage(ctx context.Context, req *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	resp, err := l.srv.RemoveImage(inNamespace(ctx), req)
	return resp, criErr(err)
}

func (l localCRI) ImageFsInfo(ctx context.Context, req *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	resp, err := l.srv.ImageFsInfo(inNamespace(ctx), req)
	return resp, criErr(err)
}

func (l localCRI) StreamImages(req *runtime.StreamImagesRequest, stream grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error {
	return criErr(l.srv.StreamImages(req, namespacedStream{stream}))
}

// namespacedStream is a server stream whose context is in k8s.io.
type namespacedStream struct {
	grpc.ServerStreamingServer[runtime.StreamImagesResponse]
}

func (s namespacedStream) Context() context.Context {
	return inNamespace(s.ServerStreamingServer.Context())
}

// remoteCRI calls containerd's CRI over its socket (standalone mode).
// WaitForReady lets a call made while containerd restarts wait (up to its
// deadline) for it to come back instead of failing at once.
type remoteCRI struct{ c runtime.ImageServiceClient }

func (r remoteCRI) PullImage(ctx context.Context, req *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	return r.c.PullImage(ctx, req, grpc.WaitForReady(true))
}

func (r remoteCRI) ListImages(ctx context.Context, req *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	return r.c.ListImages(ctx, req, grpc.WaitForReady(true))
}

func (r remoteCRI) ImageStatus(ctx context.Context, req *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	return r.c.ImageStatus(ctx, req, grpc.WaitForReady(true))
}

func (r remoteCRI) RemoveImage(ctx context.Context, req *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	return r.c.RemoveImage(ctx, req, grpc.WaitForReady(true))
}

func (r remoteCRI) ImageFsInfo(ctx context.Context, req *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	return r.c.ImageFsInfo(ctx, req, grpc.WaitForReady(true))
}

// StreamImages relays containerd's stream message by message.
func (r remoteCRI) StreamImages(req *runtime.StreamImagesRequest, stream grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error {
	up, err := r.c.StreamImages(stream.Context(), req, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for {
		m, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}
