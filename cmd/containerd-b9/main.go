// containerd-b9 is upstream containerd with the b9-resolver plugin
// compiled in. Every containerd flag and subcommand works as usual; the
// extra subcommand `standalone` runs the same b9 CRI image service as its
// own process next to a stock containerd (see contrib/b9-resolver.service
// and deploy/), and `probe` checks that a b9 socket answers (its
// readiness probe).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"

	_ "github.com/beam-cloud/b9-resolver/plugin"
)

func main() {
	app := command.App()
	app.Commands = append(app.Commands, standaloneCommand(), probeCommand())
	if err := app.Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd-b9:", err)
		os.Exit(1)
	}
}
