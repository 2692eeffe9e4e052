//go:build linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
	"github.com/beam-cloud/b9-resolver/pkg/credclient/clipprovider"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
	"github.com/beam-cloud/b9-resolver/plugin/credentials/credtest"
)

const (
	clipUser = "beta9"
	clipPass = "CANARY-clip-registry-pass-5e0d"
	clipRepo = "beta9/private"
	// clipTokenLife is the registry's token lifetime: short, so a lazy
	// read phase of a few seconds crosses several expiries.
	clipTokenLife = 2 * time.Second
	clipLayers    = 18
	clipReadEvery = 300 * time.Millisecond
)

// countingProvider counts CLIP's calls into our provider.
type countingProvider struct {
	common.RegistryCredentialProvider
	calls atomic.Int64
}

func (p *countingProvider) GetCredentials(ctx context.Context, registry, scope string) (*authn.AuthConfig, error) {
	p.calls.Add(1)
	return p.RegistryCredentialProvider.GetCredentials(ctx, registry, scope)
}

// clipImage is an image of clipLayers layers, each holding one file, so
// every lazy read of a new file is a registry fetch.
func clipImage(t *testing.T) (v1.Image, map[string][]byte) {
	t.Helper()
	files := map[string][]byte{}
	img := empty.Image
	for i := range clipLayers {
		name := fmt.Sprintf("file-%02d.txt", i)
		content := bytes.Repeat([]byte(fmt.Sprintf("layer %02d of the private image\n", i)), 64)
		files[name] = content
		l, err := crane.Layer(map[string][]byte{name: content})
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img, files
}

func requireRootAndFUSE(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("CLIP integration: needs root for the FUSE mount (CI runs as root)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("CLIP integration: /dev/fuse not usable: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err := exec.LookPath("fusermount"); err != nil {
			t.Skip("CLIP integration: go-fuse needs fusermount3 or fusermount (apt-get install fuse3)")
		}
	}
}

// TestCLIPIndexAndLazyMountThroughB9Provider runs CLIP itself against a
// token-auth registry with our provider over the Credentials socket:
// CreateFromOCIImage indexes the private image, then MountArchive mounts
// it and files are read lazily, one new layer at a time, while the
// registry's tokens expire every clipTokenLife.
func TestCLIPIndexAndLazyMountThroughB9Provider(t *testing.T) {
	requireRootAndFUSE(t)
	ctx := context.Background()
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser(clipUser, clipPass, clipRepo),
		registrytest.WithTokenExpiresIn(clipTokenLife))
	img, files := clipImage(t)
	pushed := reg.PushImage(t, clipRepo, "v1", img, clipUser, clipPass)

	// The Credentials service, with the pull recorded as the CRI service
	// records it, and CLIP's provider pinned to that pull's ref.
	svc := credtest.Start(t, credentials.Config{})
	ref := svc.Pull(t, reg.Host, clipRepo, fmt.Sprintf(`{"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, clipUser, clipPass))
	client, err := credclient.New(svc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	provider := &countingProvider{RegistryCredentialProvider: clipprovider.New(client, clipprovider.WithCredentialRef(ref))}

	dir := t.TempDir()
	// Control: without credentials CLIP cannot index the image, so the
	// success below is our provider's doing. (CLIP falls back to the
	// default keychain; the test's HOME has no docker config.)
	t.Setenv("HOME", dir)
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "no-docker-config"))
	err = clip.CreateFromOCIImage(ctx, clip.CreateFromOCIImageOptions{
		ImageRef: pushed.Ref, OutputPath: filepath.Join(dir, "anon.clip"), CredProvider: common.PublicOnlyProvider{},
	})
	if err == nil {
		t.Fatal("CLIP indexed the private image without credentials")
	}

	archive := filepath.Join(dir, "image.clip")
	if err := clip.CreateFromOCIImage(ctx, clip.CreateFromOCIImageOptions{
		ImageRef: pushed.Ref, OutputPath: archive, CredProvider: provider,
	}); err != nil {
		t.Fatalf("CreateFromOCIImage with the b9 provider: %v", err)
	}
	indexCalls := provider.calls.Load()
	if indexCalls == 0 {
		t.Fatal("CLIP never asked our provider while indexing (interface assertion failed?)")
	}

	mnt := filepath.Join(dir, "mnt")
	startServer, serverErr, server, err := clip.MountArchive(clip.MountOptions{
		ArchivePath: archive, MountPoint: mnt, CachePath: filepath.Join(dir, "cache"),
		RegistryCredProvider: provider,
	})
	if err != nil {
		t.Fatalf("MountArchive: %v", err)
	}
	if err := startServer(); err != nil {
		t.Fatal(err)
	}
	// Always unmount, even when the test fails midway.
	t.Cleanup(func() { unmount(t, mnt, serverErr) })
	if err := server.WaitMount(); err != nil {
		t.Fatalf("mount: %v", err)
	}
	mountCalls := provider.calls.Load() - indexCalls

	// The lazy read phase: one new file (= one layer fetch) every
	// clipReadEvery. Count only this phase's registry traffic.
	reg.Reset()
	rpcsBefore := svc.RPCs()
	start := time.Now()
	for i := range clipLayers {
		name := fmt.Sprintf("file-%02d.txt", i)
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil {
			t.Fatalf("lazy read %d (%s) after %s: %v\n%s", i, name, time.Since(start).Round(time.Millisecond), err, reg.Summary())
		}
		if !bytes.Equal(got, files[name]) {
			t.Fatalf("lazy read %s: wrong content (%d bytes)", name, len(got))
		}
		time.Sleep(clipReadEvery)
	}
	elapsed := time.Since(start)

	blobReads := reg.Count(func(q registrytest.Request) bool {
		return q.Server == registrytest.ServerRegistry && q.IsBlob() && q.Method == http.MethodGet && q.Status == http.StatusOK
	})
	tokenCalls := reg.TokenFetches()
	unauthorized := reg.Unauthorized()
	readsPerLife := float64(clipTokenLife) / float64(clipReadEvery)
	expected := float64(blobReads) / readsPerLife
	byTime := elapsed.Seconds() / clipTokenLife.Seconds()
	t.Logf("CLIP lazy reads: %d files in %s; registry blob GETs=%d, token calls=%d, 401s=%d; "+
		"reads/token-life=%.1f so reads÷that=%.1f (by elapsed time %.1f); provider calls: index=%d mount=%d read-phase=%d; service RPCs in read phase=%d",
		clipLayers, elapsed.Round(time.Millisecond), blobReads, tokenCalls, unauthorized, readsPerLife, expected, byTime,
		indexCalls, mountCalls, provider.calls.Load()-indexCalls-mountCalls, svc.RPCs()-rpcsBefore)

	if blobReads < clipLayers {
		t.Fatalf("only %d blob fetches for %d lazily read layers: reads did not reach the registry\n%s", blobReads, clipLayers, reg.Summary())
	}
	// Tokens did expire during the reads and were renewed with the
	// credential our provider gave...
	if tokenCalls < 1 || unauthorized < 1 {
		t.Fatalf("no token expired during %s of reads (token calls %d, 401s %d)", elapsed, tokenCalls, unauthorized)
	}
	// ...about once per token life, not once per read.
	if limit := int(math.Ceil(byTime)) + 1; tokenCalls > limit || tokenCalls >= blobReads {
		t.Fatalf("token calls %d for %d reads over %.1f token lives (limit %d)\n%s", tokenCalls, blobReads, byTime, limit, reg.Summary())
	}
	for _, q := range reg.Requests() {
		if q.Server == registrytest.ServerToken && q.Status != http.StatusOK {
			t.Fatalf("a token request failed: %+v", q)
		}
	}
}

// TestCLIPStyleFetchPerLayer is how newer CLIP (the version beta9 pins)
// fetches: it asks the provider on every layer fetch and builds a fresh
// authenticated transport from the answer. Our provider must then be
// cheap per call (the client cache), stay correct across token expiries,
// and never need the service more than about once per cache life.
func TestCLIPStyleFetchPerLayer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("CLIP integration: needs root to serve the root-only Credentials socket (CI runs as root)")
	}
	ctx := context.Background()
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser(clipUser, clipPass, clipRepo), registrytest.WithTokenExpiresIn(clipTokenLife))
	img, _ := clipImage(t)
	pushed := reg.PushImage(t, clipRepo, "v1", img, clipUser, clipPass)
	svc := credtest.Start(t, credentials.Config{})
	svc.Pull(t, reg.Host, clipRepo, fmt.Sprintf(`{"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, clipUser, clipPass))
	client, err := credclient.New(svc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	provider := clipprovider.New(client)

	reg.Reset()
	rpcs := svc.RPCs()
	for i, l := range pushed.Layers {
		// CLIP's storage: GetCredentials(RegistryURL, Repository) per fetch.
		cfg, err := provider.GetCredentials(ctx, reg.Host, clipRepo)
		if err != nil {
			t.Fatal(err)
		}
		if err := fetchBlob(ctx, reg, pushed.Ref, l, cfg); err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if i == len(pushed.Layers)/2 {
			time.Sleep(clipTokenLife + 500*time.Millisecond) // let every token expire mid-way
		}
	}
	if n := svc.RPCs() - rpcs; n > 2 {
		t.Fatalf("%d service calls for %d fetches: the client cache is not used", n, len(pushed.Layers))
	}
	t.Logf("per-fetch provider: %d fetches, %d service RPCs, %d token calls", len(pushed.Layers), svc.RPCs()-rpcs, reg.TokenFetches())
}

// unmount unmounts with umount(2) rather than fuse.Server.Unmount: CLIP's
// own goroutine is still inside server.WaitMount reading the mount point
// that Unmount clears, a data race in go-fuse the race detector reports.
// The kernel unmount ends the FUSE server's loop, and CLIP's goroutine
// closes serverErr.
func unmount(t *testing.T, mnt string, serverErr <-chan error) {
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Logf("unmount %s: %v; detaching", mnt, err)
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}
	select {
	case <-serverErr:
	case <-time.After(10 * time.Second):
		t.Errorf("CLIP's FUSE server did not stop after unmount")
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), " "+mnt+" ") {
		t.Errorf("%s is still mounted", mnt)
	}
}

// fetchBlob reads one layer blob as CLIP's storage does: a fresh
// go-containerregistry transport authenticated with the provider's answer.
func fetchBlob(ctx context.Context, reg *registrytest.Registry, ref, layer string, cfg *authn.AuthConfig) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	l, err := remote.Layer(r.Context().Digest(layer), remote.WithContext(ctx),
		remote.WithAuth(authn.FromConfig(*cfg)), remote.WithTransport(reg.Transport()))
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}
