// Package credprobe is the client side of the tests that re-run a test
// binary as another uid (asuser) against a Credentials socket: the child
// asks the service once and prints, in one line, what it was answered.
package credprobe

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// DialEnv names the variable that makes a test binary, re-run as another
// uid (asuser.Run), act as a Credentials client: its TestMain calls
// DialFromEnv first.
const DialEnv = "B9_CREDPROBE"

// DialVar is the DialEnv setting asking the service at addr for
// host/repository.
func DialVar(addr, host, repository string) string {
	return DialEnv + "=" + addr + "|" + host + "|" + repository
}

// DialFromEnv, when DialEnv is set, asks the service it names, prints
// one line saying what the service answered — "uid=N ok secret-len=K"
// (never the secret), "uid=N permission-denied: …", "uid=N unavailable: …"
// or "uid=N error: …" — and exits.
func DialFromEnv() {
	v, ok := os.LookupEnv(DialEnv)
	if !ok {
		return
	}
	addr, rest, _ := strings.Cut(v, "|")
	host, repo, _ := strings.Cut(rest, "|")
	c, err := credclient.New(addr, credclient.WithCacheTTL(0), credclient.WithTimeout(10*time.Second))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer os.Exit(0)
	defer c.Close()
	cred, err := c.GetCredentials(context.Background(), credclient.Request{Host: host, Repository: repo})
	uid := os.Getuid()
	switch {
	case errdefs.IsPermissionDenied(err):
		fmt.Printf("uid=%d permission-denied: %v\n", uid, err)
	case errdefs.IsUnavailable(err):
		fmt.Printf("uid=%d unavailable: %v\n", uid, err)
	case err != nil:
		fmt.Printf("uid=%d error: %v\n", uid, err)
	default:
		fmt.Printf("uid=%d ok secret-len=%d\n", uid, len(cred.Secret))
	}
}
