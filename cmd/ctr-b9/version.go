package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/urfave/cli/v3"

	"github.com/beam-cloud/b9-resolver/internal/version"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:        "version",
		Usage:       "print the version and the containerd version built against",
		Description: "Example:\n   ctr-b9 version",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			_, err := fmt.Fprintf(cmd.Root().Writer, "ctr-b9 %s\ncontainerd %s\ngo %s\n", version.Version, version.ContainerdVersion(), runtime.Version())
			return err
		},
	}
}
