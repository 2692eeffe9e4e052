// demo-registry serves a distribution registry with htpasswd auth on
// loopback, pushes a small random image to it and serves until SIGTERM.
// hack/demo.sh runs it; it prints "REF=<image>" once the image is pushed.
// The password is read from a file so it never shows in ps.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	user := flag.String("user", "demo", "the one user")
	passFile := flag.String("password-file", "", "file holding the user's password")
	repo := flag.String("push", "demo/hello:v1", "repository:tag to push a random image to")
	dir := flag.String("dir", os.TempDir(), "folder for the htpasswd file")
	flag.Parse()
	if err := run(*addr, *user, *passFile, *repo, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "demo-registry:", err)
		os.Exit(1)
	}
}

func run(addr, user, passFile, repo, dir string) error {
	b, err := os.ReadFile(passFile)
	if err != nil {
		return err
	}
	pass := strings.TrimSpace(string(b))
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		return err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		return err
	}
	// distribution logs every request; the demo shows its own output.
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}}
	cfg.HTTP.Secret = "demo-registry-http-secret"
	cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "b9-demo", "path": htpasswd}}
	app := handlers.NewApp(context.Background(), cfg)

	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if ip := l.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		return fmt.Errorf("refusing to serve on %s: loopback only", ip)
	}
	srv := &http.Server{Handler: app}
	go srv.Serve(l)

	host := l.Addr().String()
	ref, err := name.ParseReference(host+"/"+repo, name.Insecure)
	if err != nil {
		return err
	}
	img, err := random.Image(2048, 2)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	fmt.Printf("REF=%s\n", ref.Name())
	os.Stdout.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return srv.Close()
}
