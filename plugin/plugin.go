package plugin

import (
	"fmt"

	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/beam-cloud/b9-resolver/plugin/service"
)

// ID is the plugin's id; its URI is Type + "." + ID.
const ID = service.PluginID

// URI is the plugin's TOML key under [plugins].
const URI = string(plugins.GRPCPlugin) + "." + ID

func init() {
	registry.Register(&plugin.Registration{
		Type:   plugins.GRPCPlugin,
		ID:     ID,
		Config: service.DefaultConfig(),
		InitFn: initService,
	})
}

func initService(ic *plugin.InitContext) (any, error) {
	cfg, ok := ic.Config.(*service.Config)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected config type %T", URI, ic.Config)
	}
	c := *cfg
	// The containerd we run in; containerd_address in the table is for the
	// standalone daemon and is ignored here. containerd serves this socket
	// only after every plugin's InitFn has returned: the service dials it
	// lazily, on the first call.
	c.ContainerdAddress = ic.Properties[plugins.PropertyGRPCAddress]
	if c.StateDir == "" {
		// <containerd root>/io.containerd.grpc.v1.b9-resolver: the
		// Credentials service's records survive restarts by default.
		c.StateDir = ic.Properties[plugins.PropertyRootDir]
	}
	svc, err := service.New(c)
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
