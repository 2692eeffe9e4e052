// Command ctr-b9 is the operator's window into b9-resolver: it explains how
// an image reference is classified, which credential a pod's annotations
// give it and why, and (with a running node) what the registry answers.
// No command ever prints a secret; credentials appear as fingerprints.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/log"
	"github.com/urfave/cli/v3"
)

// Exit statuses (docs/design.md, ctr-b9).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr))
}

// usageError is a mistake in how the command was called: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.Run(ctx, args)
	if err == nil {
		return exitOK
	}
	var ue usageError
	status := exitFailure
	if errors.As(err, &ue) || isFlagError(err) {
		status = exitUsage
	}
	fmt.Fprintf(stderr, "ctr-b9: %s\n", oneLine(err.Error()))
	return status
}

func newApp(stdout, stderr io.Writer) *cli.Command {
	app := &cli.Command{
		Name:      "ctr-b9",
		Usage:     "explain and debug b9-resolver's registry credentials on a node",
		Writer:    stdout,
		ErrWriter: stderr,
		// Errors are printed once, by run, with the right exit status.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		// --registry-mapping values contain commas.
		DisableSliceFlagSeparator: true,
		OnUsageError: func(_ context.Context, _ *cli.Command, err error, _ bool) error {
			return usageError{err.Error()}
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Value: "/run/containerd/containerd.sock", Usage: "containerd's socket"},
			&cli.StringFlag{Name: "b9-address", Value: "/run/containerd-b9/b9.sock", Usage: "b9-resolver's socket"},
			&cli.StringFlag{Name: "namespace", Value: "k8s.io", Usage: "containerd namespace"},
			&cli.BoolFlag{Name: "debug", Usage: "log containerd client debug messages to stderr"},
		},
		Before: func(ctx context.Context, cmd *cli.Command) (context.Context, error) {
			// containerd's client logs at info level about fallbacks an
			// operator did not ask about; keep stderr for the one-line error.
			if cmd.Bool("debug") {
				return ctx, log.SetLevel("debug")
			}
			if log.GetLevel() > log.WarnLevel {
				return ctx, log.SetLevel("warn")
			}
			return ctx, nil
		},
		Commands: []*cli.Command{
			detectCommand(),
			credsCommand(),
			checkCommand(),
			pullCommand(),
			cacheCommand(),
			keygenCommand(),
			sealCommand(),
			versionCommand(),
		},
	}
	// A usage error is one line on stderr, not a help page on stdout.
	var configure func(cs []*cli.Command)
	configure = func(cs []*cli.Command) {
		for _, c := range cs {
			c.OnUsageError = app.OnUsageError
			c.DisableSliceFlagSeparator = true
			configure(c.Commands)
		}
	}
	configure(app.Commands)
	return app
}

// isFlagError recognises urfave/cli's own parse errors, which do not go
// through OnUsageError for subcommands.
func isFlagError(err error) bool {
	msg := err.Error()
	for _, s := range []string{"flag provided but not defined", "invalid value", "Required flag", "No help topic", "flag needs an argument"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// oneLine keeps an error to one line a person can act on.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
