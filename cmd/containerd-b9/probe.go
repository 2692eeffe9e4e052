package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/plugin/service"
)

// probeCommand checks that the b9 socket answers CRI image calls: a
// readiness (or startup) probe for the standalone daemon that needs no
// shell and no other program in the image.
func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "Exit 0 when the b9 socket answers a CRI ImageFsInfo call (a readiness probe)",
		Description: `Connects to the b9 socket and asks ImageFsInfo, which the service answers
from containerd: success means kubelet's image calls would be answered now.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Aliases: []string{"a"}, Value: service.DefaultAddress, Usage: "the b9 socket"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "give up after this long"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ctx, cancel := context.WithTimeout(ctx, cmd.Duration("timeout"))
			defer cancel()
			return probe(ctx, cmd.String("address"))
		},
	}
}

func probe(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := runtime.NewImageServiceClient(conn).ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{}, grpc.WaitForReady(true)); err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	return nil
}
