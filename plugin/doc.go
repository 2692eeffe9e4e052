// Package plugin registers b9-resolver with containerd as
// io.containerd.grpc.v1.b9-resolver. Import it for its side effect in a
// containerd main (see cmd/containerd-b9):
//
//	import _ "github.com/beam-cloud/b9-resolver/plugin"
//
// The plugin's table, [plugins.'io.containerd.grpc.v1.b9-resolver'], is
// decoded into service.Config (keys and defaults in contrib/config.toml).
// The plugin serves the b9 CRI image service (package service) on its own
// socket and talks to the containerd it runs in through containerd's own
// socket, exactly as the standalone daemon talks to a stock containerd:
// one code path for both. A bad table fails the plugin with a message
// naming the key; list the plugin in required_plugins to make that stop
// containerd.
package plugin
