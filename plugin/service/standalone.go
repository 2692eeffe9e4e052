package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/pelletier/go-toml/v2"
)

// PluginID is the plugin's id, and PluginURI its key under [plugins] in a
// containerd config (package plugin registers it; standalone mode reads
// the same table).
const (
	PluginID  = "b9-resolver"
	PluginURI = "io.containerd.grpc.v1." + PluginID
)

// LoadConfigFile reads the standalone daemon's config: either a containerd
// config.toml holding [plugins.'io.containerd.grpc.v1.b9-resolver'] (so
// one file serves both modes) or a file of that table's keys alone.
// Unknown keys are errors, so a typo does not silently keep a default.
func LoadConfigFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("b9-resolver config: %w", err)
	}
	var top map[string]any
	if err := toml.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("b9-resolver config %s: %s: %w", path, tomlErr(err), errdefs.ErrInvalidArgument)
	}
	table := b
	if plugins, ok := top["plugins"].(map[string]any); ok {
		sub, ok := plugins[PluginURI]
		if !ok {
			return nil, fmt.Errorf("b9-resolver config %s: no [plugins.'%s'] table: %w", path, PluginURI, errdefs.ErrInvalidArgument)
		}
		if table, err = toml.Marshal(sub); err != nil {
			return nil, fmt.Errorf("b9-resolver config %s: %w", path, err)
		}
	}
	cfg := DefaultConfig()
	dec := toml.NewDecoder(bytes.NewReader(table)).DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("b9-resolver config %s: %s: %w", path, tomlErr(err), errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// tomlErr describes a decode error by position and key: go-toml's own
// message can quote the offending text, which may be a credential.
func tomlErr(err error) string {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		keys := make([]string, 0, len(sm.Errors))
		for _, e := range sm.Errors {
			keys = append(keys, strings.Join(e.Key(), "."))
		}
		return "unknown keys: " + strings.Join(keys, ", ")
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Sprintf("line %d column %d: not valid TOML", row, col)
	}
	return "not valid TOML"
}

// Run serves cfg until ctx is done: the standalone daemon.
func Run(ctx context.Context, cfg Config, opts ...Option) error {
	svc, err := New(cfg, opts...)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		svc.Close()
		return err
	}
	<-ctx.Done()
	log.G(ctx).Info("b9-resolver: shutting down")
	return svc.Close()
}
