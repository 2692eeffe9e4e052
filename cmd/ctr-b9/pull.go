package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	ctrcontent "github.com/containerd/containerd/v2/cmd/ctr/commands/content"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/progress"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v3"
	"golang.org/x/term"

	"github.com/beam-cloud/b9-resolver/internal/resolver"
)

// criManagedLabel makes an image pulled into k8s.io visible to CRI at once
// (CRI lists images pulled with the containerd client into k8s.io once
// they carry it).
const criManagedLabel = "io.cri-containerd.image"

func pullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "pull REF through containerd with b9-resolver's resolver, showing progress",
		ArgsUsage: "REF",
		Description: `Pulls with the credentials the flags give (as the plugin would from a pod),
through hosts.toml (--hosts-dir) and b9-resolver's Authorizer, then unpacks.
Progress is drawn as ctr pull draws it on a terminal, and as plain lines
otherwise.

Example:
   ctr-b9 --address /run/containerd/containerd.sock pull --pod-config pod.json 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1
   ctr-b9 pull --creds robot:secret --plain-http --snapshotter native localhost:5000/team/app:v1`,
		Flags: append(credFlags(),
			&cli.StringFlag{Name: "snapshotter", Value: "overlayfs", Usage: "snapshotter to unpack into"},
			&cli.StringFlag{Name: "hosts-dir", Usage: "hosts.toml root (containerd's config_path)"},
			&cli.BoolFlag{Name: "plain-http", Usage: "use http for registries hosts.toml does not describe"},
			&cli.BoolFlag{Name: "no-unpack", Usage: "fetch only"},
			&cli.StringFlag{Name: "progress", Value: "auto", Usage: "auto, tty or plain"},
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ref, src, err := refAndSources(cmd)
			if err != nil {
				return err
			}
			mode := cmd.String("progress")
			if mode != "auto" && mode != "tty" && mode != "plain" {
				return usagef("--progress must be auto, tty or plain")
			}
			det, err := detectorFromFlags(cmd)
			if err != nil {
				return err
			}
			kc, _, err := newKeychain(cmd)
			if err != nil {
				return err
			}
			defer kc.Close()
			opts := []resolver.Option{resolver.WithDetector(det)}
			if dir := cmd.String("hosts-dir"); dir != "" {
				opts = append(opts, resolver.WithConfigPath(dir))
			}
			if cmd.Bool("plain-http") {
				opts = append(opts, resolver.WithDefaultScheme("http"))
			}
			res, err := resolver.New(opts...)
			if err != nil {
				return err
			}

			client, err := containerd.New(cmd.Root().String("address"), containerd.WithTimeout(10*time.Second))
			if err != nil {
				return fmt.Errorf("connect to containerd at %s: %w", cmd.Root().String("address"), err)
			}
			defer client.Close()
			ns := cmd.Root().String("namespace")
			ctx = namespaces.WithNamespace(ctx, ns)

			out := cmd.Root().Writer
			tty := mode == "tty" || (mode == "auto" && isTerminal(out))
			jobs := ctrcontent.NewJobs(ref.String())
			pctx, stop := context.WithCancel(ctx)
			shown := make(chan struct{})
			go func() {
				defer close(shown)
				if tty {
					ctrcontent.ShowProgress(pctx, jobs, client.ContentStore(), out)
				} else {
					showPlainProgress(pctx, jobs, client.ContentStore(), out)
				}
			}()

			start := time.Now()
			labels := map[string]string{}
			if ns == "k8s.io" {
				labels[criManagedLabel] = "managed"
			}
			pullOpts := []containerd.RemoteOpt{
				containerd.WithResolver(res.Resolver(src.credentials(kc, det))),
				containerd.WithPullLabels(labels),
				containerd.WithImageHandler(images.HandlerFunc(func(_ context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
					jobs.Add(d)
					return nil, nil
				})),
				containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref.String())),
			}
			if !cmd.Bool("no-unpack") {
				pullOpts = append(pullOpts, containerd.WithPullUnpack,
					containerd.WithPullSnapshotter(cmd.String("snapshotter"), snapshots.WithLabels(map[string]string{})))
			}
			img, err := client.Pull(ctx, ref.String(), pullOpts...)
			stop()
			<-shown
			if err != nil {
				return pullError(ref.String(), err)
			}
			size, _ := img.Size(ctx)
			fmt.Fprintf(out, "pulled %s\ndigest: %s\nsize: %s\ntime: %s\n", img.Name(), img.Target().Digest, progress.Bytes(size), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
}

func pullError(ref string, err error) error {
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("pull %s: not found: %w", ref, err)
	case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
		return fmt.Errorf("pull %s: the registry refused the credential (run `ctr-b9 check` with the same flags): %w", ref, err)
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// showPlainProgress prints a line when a blob starts and when it is done —
// for logs and pipes, where ctr's redrawn table would be noise.
func showPlainProgress(ctx context.Context, jobs *ctrcontent.Jobs, cs content.Store, out io.Writer) {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	start := time.Now()
	state := map[string]string{}
	report := func(final bool) {
		active := map[string]content.Status{}
		if !final {
			if sts, err := cs.ListStatuses(ctx, ""); err == nil {
				for _, s := range sts {
					active[s.Ref] = s
				}
			}
		}
		for _, d := range jobs.Jobs() {
			key := remotes.MakeRefKey(ctx, d)
			if state[key] == "done" || state[key] == "exists" {
				continue
			}
			if s, ok := active[key]; ok {
				if state[key] == "" {
					fmt.Fprintf(out, "%s: downloading %s\n", key, progress.Bytes(s.Total))
					state[key] = "downloading"
				}
				continue
			}
			info, err := cs.Info(context.WithoutCancel(ctx), d.Digest)
			if err != nil {
				continue
			}
			status := "done"
			if info.CreatedAt.Before(start) {
				status = "exists"
			}
			fmt.Fprintf(out, "%s: %s %s\n", key, status, progress.Bytes(info.Size))
			state[key] = status
		}
	}
	for {
		select {
		case <-ticker.C:
			report(false)
		case <-ctx.Done():
			report(true)
			return
		}
	}
}
