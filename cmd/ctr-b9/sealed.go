package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/urfave/cli/v3"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/sealed"
	"github.com/beam-cloud/b9-resolver/pkg/imagecreds"
)

// keygenResult is `ctr-b9 keygen -o json`.
type keygenResult struct {
	IdentityFile string `json:"identity_file"`
	Recipient    string `json:"recipient"`
	Fingerprint  string `json:"fingerprint"`
}

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:      "keygen",
		Usage:     "create a node identity FILE (0600) for sealed documents and print its recipient",
		ArgsUsage: "FILE",
		Description: `Writes a new age X25519 identity to FILE (created 0600; an existing file is
never overwritten) for the node's sealed.identity_files, and prints the
public recipient (age1…) a control plane seals documents for. The secret key
is written to the file only.

Example:
   ctr-b9 keygen /etc/b9-resolver/identities/2026-12.key`,
		Flags: []cli.Flag{outputFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("keygen takes exactly one FILE to write the identity to (got %d arguments)", cmd.NArg())
			}
			path := cmd.Args().First()
			if path == "-" {
				return usagef("keygen writes the identity to a file, never to stdout")
			}
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			recipient := id.Recipient().String()
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			_, werr := fmt.Fprintf(f, "# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), recipient, id)
			if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
				os.Remove(path)
				return fmt.Errorf("keygen: %s: %w", path, err)
			}
			res := keygenResult{IdentityFile: path, Recipient: recipient, Fingerprint: sealed.RecipientFingerprint(recipient)}
			if cmd.String("output") == "json" {
				return emit(cmd.Root().Writer, "json", res, nil)
			}
			fmt.Fprintln(cmd.Root().Writer, recipient)
			fmt.Fprintf(cmd.Root().ErrWriter, "ctr-b9: wrote %s (0600); recipient fingerprint %s\n", path, res.Fingerprint)
			return nil
		},
	}
}

func sealCommand() *cli.Command {
	return &cli.Command{
		Name:  "seal",
		Usage: "seal a credential document (stdin) for node recipients and one namespace; print the annotation value",
		Description: `Reads a credential document (any form: envelope, array, flat JSON,
user:pass) from stdin, checks it as the node will, and encrypts it with age
for every --recipient, bound to --namespace and, with --not-after, valid
until then. Prints the annotation value ("age:" and base64), or with
--annotation the whole "key: value" line for a pod's annotations.

Example:
   ctr-b9 seal --recipient age1… --recipient age1… --namespace team-a --not-after 720h < ecr.json
   ctr-b9 seal --recipients-file fleet.txt --namespace team-a --annotation --name ecr < ecr.json`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "recipient", Aliases: []string{"r"}, Usage: "a node recipient (age1…), as `ctr-b9 keygen` prints it (repeatable)"},
			&cli.StringFlag{Name: "recipients-file", Usage: "a file of recipients, one per line (# comments)"},
			&cli.StringFlag{Name: "namespace", Usage: "the only pod namespace the document may be used in", Required: true},
			&cli.StringFlag{Name: "not-after", Usage: "expiry: an RFC 3339 time or a duration from now (720h)"},
			&cli.BoolFlag{Name: "annotation", Usage: "print the whole `key: value` annotation line"},
			&cli.StringFlag{Name: "name", Usage: "credential name: the key becomes image-credentials.NAME"},
			&cli.StringFlag{Name: "annotation-prefix", Value: document.DefaultAnnotationPrefix, Usage: "prefix of the annotation key"},
			&cli.StringFlag{Name: "image", Usage: "the image the document is for, so a type can be told from its registry as the node does"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return usagef("seal reads the document from stdin and takes no arguments")
			}
			recipients, err := sealRecipients(cmd)
			if err != nil {
				return err
			}
			notAfter, err := parseNotAfter(cmd.String("not-after"), time.Now())
			if err != nil {
				return err
			}
			b, err := io.ReadAll(io.LimitReader(os.Stdin, document.MaxDocumentBytes+1))
			if err != nil {
				return fmt.Errorf("seal: reading stdin: %w", err)
			}
			if strings.TrimSpace(string(b)) == "" {
				return usagef("seal: no document on stdin")
			}
			opts := []imagecreds.Option{
				imagecreds.WithPrefix(cmd.String("annotation-prefix")),
				imagecreds.WithName(cmd.String("name")),
				imagecreds.WithSealing(recipients, cmd.String("namespace"), notAfter),
			}
			if img := cmd.String("image"); img != "" {
				opts = append(opts, imagecreds.WithImage(img))
			}
			// One annotation: the document's own, sealed (the same code a
			// control plane runs).
			ann, err := imagecreds.FromContainerRequest(string(b), opts...)
			if err != nil {
				return err
			}
			for k, v := range ann {
				if cmd.Bool("annotation") {
					fmt.Fprintf(cmd.Root().Writer, "%s: %s\n", k, v)
				} else {
					fmt.Fprintln(cmd.Root().Writer, v)
				}
			}
			return nil
		},
	}
}

// sealRecipients are --recipient and --recipients-file's lines.
func sealRecipients(cmd *cli.Command) ([]string, error) {
	rs := cmd.StringSlice("recipient")
	if f := cmd.String("recipients-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--recipients-file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				rs = append(rs, line)
			}
		}
	}
	if len(rs) == 0 {
		return nil, usagef("seal needs at least one --recipient (or --recipients-file)")
	}
	for _, r := range rs {
		if strings.HasPrefix(strings.ToUpper(r), "AGE-SECRET-KEY-") {
			// Never echo it: it is a secret key given by mistake.
			return nil, usagef("a --recipient is an identity (secret key), not a recipient; give the age1… line `ctr-b9 keygen` printed")
		}
	}
	return rs, nil
}

// parseNotAfter reads an RFC 3339 time or a duration from now; "" is no expiry.
func parseNotAfter(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		if !t.After(now) {
			return time.Time{}, usagef("--not-after %s is in the past", s)
		}
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, usagef("--not-after wants an RFC 3339 time (2026-12-31T00:00:00Z) or a positive duration (720h)")
	}
	return now.Add(d), nil
}
