package main

import (
	"context"

	"github.com/urfave/cli/v3"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// detectResult is `ctr-b9 detect -o json`.
type detectResult struct {
	Reference  string        `json:"reference"`
	Host       string        `json:"host"`
	Kind       registry.Kind `json:"kind"`
	Repository string        `json:"repository"`
	Account    string        `json:"account"`
	Region     string        `json:"region"`
	Partition  string        `json:"partition"`
	FIPS       bool          `json:"fips"`
	DualStack  bool          `json:"dualstack"`
}

func detectCommand() *cli.Command {
	return &cli.Command{
		Name:      "detect",
		Usage:     "parse an image reference and name its registry kind",
		ArgsUsage: "REF",
		Description: `Example:
   ctr-b9 detect 123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app:v1
   ctr-b9 detect -o json ghcr.io/beam-cloud/beta9`,
		Flags: []cli.Flag{outputFlag(), mappingFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ref, err := parseRefArg(cmd)
			if err != nil {
				return err
			}
			r := ref.Registry
			res := detectResult{
				Reference: ref.String(), Host: r.Host, Kind: r.Kind, Repository: ref.Repository,
				Account: r.Account, Region: r.Region, Partition: r.Partition, FIPS: r.FIPS, DualStack: r.DualStack,
			}
			return emit(cmd.Root().Writer, cmd.String("output"), res, []field{
				{"reference", res.Reference}, {"host", res.Host}, {"kind", string(res.Kind)},
				{"repository", res.Repository}, {"account", res.Account}, {"region", res.Region},
				{"partition", res.Partition}, {"fips", yesNo(res.FIPS)}, {"dualstack", yesNo(res.DualStack)},
			})
		},
	}
}

// parseRefArg reads the one REF argument.
func parseRefArg(cmd *cli.Command) (registry.Reference, error) {
	if cmd.NArg() != 1 {
		return registry.Reference{}, usagef("%s takes exactly one image reference (got %d arguments)", cmd.Name, cmd.NArg())
	}
	d, err := detectorFromFlags(cmd)
	if err != nil {
		return registry.Reference{}, err
	}
	return d.ParseReference(cmd.Args().First())
}
