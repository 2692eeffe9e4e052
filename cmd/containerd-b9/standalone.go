package main

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/urfave/cli/v3"

	"github.com/beam-cloud/b9-resolver/internal/metrics"
	"github.com/beam-cloud/b9-resolver/internal/unixsock"
	"github.com/beam-cloud/b9-resolver/plugin/service"
)

// standaloneCommand runs the b9 CRI image service as its own process for
// nodes that keep their stock containerd: the same service the plugin
// runs, given containerd's socket.
func standaloneCommand() *cli.Command {
	return &cli.Command{
		Name:  "standalone",
		Usage: "Run the b9-resolver CRI image service next to a stock containerd",
		Description: `Serves the b9 CRI image service on --address and uses the containerd at
--containerd-address for pulls (direct mode) or its CRI (forward mode and all
other image calls). --config takes a containerd config.toml with the
[plugins.'io.containerd.grpc.v1.b9-resolver'] table, or a file of that
table's keys alone; flags override it.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML config file (optional)"},
			&cli.StringFlag{Name: "containerd-address", Usage: "containerd's socket", Value: service.DefaultContainerdAddress},
			&cli.StringFlag{Name: "address", Aliases: []string{"a"}, Usage: "the b9 socket (default " + service.DefaultAddress + ")"},
			&cli.StringFlag{Name: "pull-mode", Usage: "direct or forward"},
			&cli.StringFlag{Name: "log-level", Aliases: []string{"l"}, Value: "info", Usage: "trace, debug, info, warn, error"},
			&cli.StringFlag{Name: "metrics-address", Usage: "HOST:PORT to serve Prometheus metrics on at /v1/metrics, as containerd's [metrics] address (default: none)"},
			&cli.StringFlag{Name: "debug-address", Usage: "unix socket to serve Go's /debug/pprof and /debug/vars on, as containerd's [debug] address (root-only; default: none)"},
			&cli.DurationFlag{Name: "takeover-timeout", Usage: "when another process serves the socket, wait this long for it to stop and then take the path over, instead of failing at once (a rolling upgrade's new instance)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := log.SetLevel(cmd.String("log-level")); err != nil {
				return err
			}
			cfg := service.DefaultConfig()
			// CRI's image settings, which direct pulls follow: from the
			// file when it is containerd's config, else CRI's defaults.
			var cri *service.CRIImageSettings
			if path := cmd.String("config"); path != "" {
				var err error
				if cfg, err = service.LoadConfigFile(path); err != nil {
					return err
				}
				if cri, err = service.LoadCRIImageSettingsFile(path); err != nil {
					return err
				}
			}
			if cmd.IsSet("containerd-address") || cfg.ContainerdAddress == "" {
				cfg.ContainerdAddress = cmd.String("containerd-address")
			}
			if a := cmd.String("address"); a != "" {
				cfg.Address = a
			}
			if m := cmd.String("pull-mode"); m != "" {
				cfg.PullMode = service.PullMode(m)
			}
			ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if addr := cmd.String("metrics-address"); addr != "" {
				closeMetrics, err := serveMetrics(ctx, addr)
				if err != nil {
					return err
				}
				defer closeMetrics()
			}
			if addr := cmd.String("debug-address"); addr != "" {
				closeDebug, err := serveDebug(ctx, addr)
				if err != nil {
					return err
				}
				defer closeDebug()
			}
			return runTakingOver(ctx, *cfg, cmd.Duration("takeover-timeout"), service.WithCRIImageSettings(cri))
		},
	}
}

// runTakingOver is service.Run, but while another process serves the
// socket it waits (up to timeout) for that process to stop, then serves
// the path itself. kubelet needs the socket to start any container, this
// daemon's next version included: so the new instance starts while the
// old one serves and takes over when it goes.
func runTakingOver(ctx context.Context, cfg service.Config, timeout time.Duration, opts ...service.Option) error {
	deadline := time.Now().Add(timeout)
	logged := false
	for {
		if answering(cfg.Address) && time.Now().Before(deadline) {
			if !logged {
				log.G(ctx).WithField("address", cfg.Address).WithField("timeout", timeout).
					Info("b9-resolver: another process serves the socket; waiting for it to stop")
				logged = true
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		err := service.Run(ctx, cfg, opts...)
		// Another instance may have taken the path between the check and
		// the listen: wait again.
		if errdefs.IsAlreadyExists(err) && answering(cfg.Address) && time.Now().Before(deadline) {
			continue
		}
		return err
	}
}

// answering reports whether something accepts connections on the unix
// socket at addr.
func answering(addr string) bool {
	c, err := net.DialTimeout("unix", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// serveMetrics serves the metrics on addr at /v1/metrics, the path
// containerd's metrics server uses, until the returned func is called.
func serveMetrics(ctx context.Context, addr string) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/metrics", metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.G(ctx).WithError(err).Error("b9-resolver: metrics server stopped")
		}
	}()
	log.G(ctx).WithField("address", l.Addr().String()).Info("b9-resolver: serving metrics at /v1/metrics")
	return func() { _ = srv.Close() }, nil
}

// serveDebug serves Go's profiler and expvar on the unix socket addr, the
// paths containerd's [debug] address serves, so `go tool pprof` reads the
// standalone daemon as it reads containerd. The socket is root-only: a
// profile shows what the process holds.
func serveDebug(ctx context.Context, addr string) (func(), error) {
	l, err := unixsock.Listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/vars", expvar.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.G(ctx).WithError(err).Error("b9-resolver: debug server stopped")
		}
	}()
	log.G(ctx).WithField("address", addr).Info("b9-resolver: serving /debug/pprof")
	return func() { _ = srv.Close() }, nil
}
