package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v3"
	"golang.org/x/sys/unix"

	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// cacheEntry is one line of `ctr-b9 cache ls -o json`.
type cacheEntry struct {
	Host          string `json:"host"`
	Kind          string `json:"kind"`
	Type          string `json:"type"`
	Source        string `json:"source"`
	Provider      string `json:"provider"`
	Fingerprint   string `json:"fingerprint"`
	CredentialRef string `json:"credential_ref"`
	ExpiresAt     string `json:"expires_at"`
	ExpiresIn     string `json:"expires_in"`
}

func cacheCommand() *cli.Command {
	return &cli.Command{
		Name:  "cache",
		Usage: "inspect the running plugin's credential cache",
		Description: `Example:
   ctr-b9 cache ls
   ctr-b9 --b9-address /run/containerd-b9/b9.sock cache ls -o json`,
		Commands: []*cli.Command{{
			Name:        "ls",
			Usage:       "list cached credentials, redacted, with time to expiry",
			Description: "Example:\n   ctr-b9 cache ls -o json",
			Flags:       []cli.Flag{outputFlag()},
			Action: func(ctx context.Context, cmd *cli.Command) error {
				addr := cmd.Root().String("b9-address")
				c, err := credclient.New(addr, credclient.WithTimeout(5*time.Second))
				if err != nil {
					return fmt.Errorf("connect to b9-resolver at %s: %w", addr, err)
				}
				defer c.Close()
				entries, err := c.ListCredentials(ctx)
				if err != nil {
					if errdefs.IsUnavailable(err) && errors.Is(unix.Access(addr, unix.W_OK), unix.EACCES) {
						return fmt.Errorf("cannot open %s as uid %d: the b9 socket is root-only; run as root, or as a uid in credentials_uids with --b9-address set to the plugin's credentials_address: %w",
							addr, os.Getuid(), errdefs.ErrPermissionDenied)
					}
					if errdefs.IsUnavailable(err) {
						return fmt.Errorf("b9-resolver is not serving on %s (is the plugin enabled? --b9-address): %w", addr, err)
					}
					if errdefs.IsPermissionDenied(err) {
						return fmt.Errorf("b9-resolver at %s refused this user: run as root or as a uid in credentials_uids: %w", addr, err)
					}
					return err
				}
				now := time.Now()
				out := struct {
					Entries []cacheEntry `json:"entries"`
				}{Entries: []cacheEntry{}}
				for _, e := range entries {
					ce := cacheEntry{Host: e.Host, Kind: e.Kind, Type: e.Type, Source: e.Source, Provider: e.Provider,
						Fingerprint: e.Fingerprint, CredentialRef: e.Ref}
					if !e.ExpiresAt.IsZero() {
						ce.ExpiresAt = e.ExpiresAt.UTC().Format(time.RFC3339)
						ce.ExpiresIn = e.ExpiresAt.Sub(now).Round(time.Second).String()
					}
					out.Entries = append(out.Entries, ce)
				}
				w := cmd.Root().Writer
				if cmd.String("output") == "json" {
					return emit(w, "json", out, nil)
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tKIND\tTYPE\tPROVIDER\tSOURCE\tFINGERPRINT\tEXPIRES IN")
				for _, e := range out.Entries {
					exp := e.ExpiresIn
					if exp == "" {
						exp = "never"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Host, e.Kind, e.Type, e.Provider, e.Source, e.Fingerprint, exp)
				}
				return tw.Flush()
			},
		}},
	}
}
