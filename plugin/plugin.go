package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/platforms"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/plugin/service"
)

// ID is the plugin's id; its URI is Type + "." + ID.
const ID = service.PluginID

// URI is the plugin's TOML key under [plugins].
const URI = string(plugins.GRPCPlugin) + "." + ID

// The CRI plugins the service uses in process: the image service (forwarded
// calls, forward-mode pulls, its settings) and the runtime service (its
// runtimes' snapshotters).
const (
	criImagesID  = "images"
	criRuntimeID = "runtime"
)

func init() {
	registry.Register(&plugin.Registration{
		Type:   plugins.GRPCPlugin,
		ID:     ID,
		Config: service.DefaultConfig(),
		// What client.WithInMemoryServices takes from the InitContext, and
		// CRI's plugins; like containerd's CRI image plugin, so all of it
		// is loaded before InitFn runs.
		Requires: []plugin.Type{
			plugins.EventPlugin,
			plugins.LeasePlugin,
			plugins.MetadataPlugin,
			plugins.MountManagerPlugin,
			plugins.SandboxStorePlugin,
			plugins.ServicePlugin,
			plugins.SnapshotPlugin,
			plugins.TransferPlugin,
			plugins.CRIServicePlugin,
		},
		InitFn: initService,
	})
}

func initService(ic *plugin.InitContext) (any, error) {
	cfg, ok := ic.Config.(*service.Config)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected config type %T", URI, ic.Config)
	}
	c := *cfg
	// The containerd we run in, in process; containerd_address in the
	// table is for the standalone daemon and is ignored here.
	c.ContainerdAddress = ic.Properties[plugins.PropertyGRPCAddress]
	if c.StateDir == "" {
		// <containerd root>/io.containerd.grpc.v1.b9-resolver: the
		// Credentials service's records survive restarts by default.
		c.StateDir = ic.Properties[plugins.PropertyRootDir]
	}
	ip, err := inProcess(ic)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", URI, err)
	}
	svc, err := service.New(c, service.WithInProcess(ip))
	if err != nil {
		return nil, err
	}
	if err := svc.Start(ic.Context); err != nil {
		svc.Close()
		return nil, err
	}
	// containerd calls Close (io.Closer) on shutdown. The service has no
	// Register(*grpc.Server) method, so containerd does not add it to its
	// own server: it lives on its own socket.
	return svc, nil
}

// inProcess is containerd's services as Go values, as containerd's CRI
// plugins use them: content, images, leases, snapshots and unpacking run
// in this process, never through containerd's own socket.
func inProcess(ic *plugin.InitContext) (service.InProcess, error) {
	client, err := containerd.New("",
		containerd.WithDefaultNamespace(service.Namespace),
		containerd.WithDefaultPlatform(platforms.Default()),
		containerd.WithInMemoryServices(ic),
	)
	if err != nil {
		return service.InProcess{}, fmt.Errorf("in-process containerd client: %w", err)
	}
	ip := service.InProcess{Client: client}
	images, err := ic.GetByID(plugins.CRIServicePlugin, criImagesID)
	if err != nil {
		client.Close()
		return service.InProcess{}, fmt.Errorf("containerd's CRI image service (%s.%s) is needed: it serves the calls b9 forwards: %w",
			plugins.CRIServicePlugin, criImagesID, err)
	}
	grpcService, ok := images.(interface {
		GRPCService() runtime.ImageServiceServer
	})
	if !ok {
		client.Close()
		return service.InProcess{}, fmt.Errorf("containerd's CRI image service (%T) has no GRPCService method", images)
	}
	ip.CRI = grpcService.GRPCService()
	if u, ok := images.(interface {
		UpdateImage(context.Context, string) error
	}); ok {
		ip.UpdateImage = u.UpdateImage
	}
	if ip.CRIImages, err = criImageSettings(ic, images); err != nil {
		client.Close()
		return service.InProcess{}, err
	}
	return ip, nil
}

// criImageSettings reads the running CRI's image settings. CRI's config
// types live in containerd's internal packages, so they are read through
// their JSON form (the one `crictl info` prints), from the plugins' Config
// methods.
func criImageSettings(ic *plugin.InitContext, images any) (*service.CRIImageSettings, error) {
	b, err := configJSON(images)
	if err != nil {
		return nil, fmt.Errorf("CRI image config: %w", err)
	}
	s, err := service.ParseCRIImageSettings(b)
	if err != nil {
		return nil, err
	}
	// Runtime handlers' snapshotters ([...cri.v1.runtime'.containerd.runtimes.X]
	// snapshotter), which containerd's CRI plugin adds to the image
	// service's runtime platforms.
	if rt, err := ic.GetByID(plugins.CRIServicePlugin, criRuntimeID); err == nil {
		if b, err := configJSON(rt); err == nil {
			var rc struct {
				Containerd struct {
					Runtimes map[string]struct {
						Snapshotter string `json:"snapshotter"`
					} `json:"runtimes"`
				} `json:"containerd"`
			}
			if err := json.Unmarshal(b, &rc); err == nil {
				byHandler := map[string]string{}
				for h, r := range rc.Containerd.Runtimes {
					byHandler[h] = r.Snapshotter
				}
				s.AddRuntimeSnapshotters(byHandler)
			}
		}
	}
	return s, nil
}

// configJSON calls v's Config() method and returns its result as JSON.
func configJSON(v any) ([]byte, error) {
	m := reflect.ValueOf(v).MethodByName("Config")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return nil, fmt.Errorf("%T has no Config() method", v)
	}
	return json.Marshal(m.Call(nil)[0].Interface())
}
