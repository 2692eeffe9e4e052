package credclient_test

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// goList returns the packages pattern depends on, itself included.
func goList(t *testing.T, pattern string) []string {
	t.Helper()
	// go test puts its own go first on PATH.
	cmd := exec.Command("go", "list", "-deps", pattern)
	cmd.Dir = filepath.Join("..", "..") // the module root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pattern, err, out)
	}
	return strings.Fields(string(out))
}

const module = "github.com/beam-cloud/b9-resolver/"

// Public packages are imported into other programs (CLIP, remote
// snapshotters): what they drag in becomes the importer's. internal/metrics
// registers b9's collectors in the importer's default Prometheus registry
// from an init, the cloud SDKs weigh dozens of packages, and the client of
// a gRPC socket has no use for containerd's.
func TestPublicPackagesDependOnLittle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	forbidden := []string{
		module + "internal/metrics",
		module + "internal/keychain/aws",
		module + "internal/keychain/gcp",
		module + "internal/keychain/azure",
		module + "internal/keychain/cloud",
		module + "internal/resolver",
		module + "plugin",
		"github.com/containerd/containerd/v2/client",
		"github.com/prometheus/",
		"github.com/docker/go-metrics",
		"github.com/aws/aws-sdk-go-v2",
		"github.com/aws/smithy-go",
		"golang.org/x/oauth2/google",
		"cloud.google.com/",
		"github.com/Azure/",
		"github.com/AzureAD/",
	}
	// CLIP's own interface package imports the AWS SDK; clipprovider must
	// import it to return CLIP's ErrNoCredentials sentinel, and CLIP, its
	// only importer, has those packages anyway. What comes only through it
	// is not ours.
	clip := goList(t, "github.com/beam-cloud/clip/pkg/common")
	for _, tc := range []struct {
		pkg   string
		extra []string // also forbidden for this package
	}{
		{"./pkg/credclient", []string{"github.com/containerd/containerd/", module + "internal/keychain"}},
		{"./pkg/credclient/clipprovider", []string{"github.com/containerd/containerd/", module + "internal/keychain"}},
		{"./pkg/credclient/remotehosts", nil},
		{"./pkg/...", nil},
	} {
		for _, dep := range goList(t, tc.pkg) {
			if slices.Contains(clip, dep) {
				continue
			}
			for _, bad := range slices.Concat(forbidden, tc.extra) {
				if dep == bad || strings.HasPrefix(dep, bad) && (strings.HasSuffix(bad, "/") || strings.HasPrefix(dep, bad+"/")) {
					t.Errorf("%s depends on %s (forbidden: %s)", tc.pkg, dep, bad)
				}
			}
		}
	}
}
