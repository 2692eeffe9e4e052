package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// TestParallelUnpack pulls, with max_concurrent_unpacks = 2 on overlayfs
// (containerd's parallel unpack), an image whose second layer deletes a
// file of the first: the unpack must run in parallel mode and still turn
// the OCI whiteout into overlayfs's (a 0:0 character device), or the
// deleted file would show through in containers.
func TestParallelUnpack(t *testing.T) {
	binaries(t)
	pass := canary("unpack")
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", pass))
	n := newNode(t, nodeConfig{snapshotter: "overlayfs", plugin: "max_concurrent_unpacks = 2\n"})

	var layers []v1.Layer
	for _, files := range []map[string][]byte{
		{"data/keep": []byte("kept"), "data/gone": []byte("deleted above")},
		{"data/.wh.gone": nil, "data/added": []byte("second layer")},
		{"data/third": []byte("third layer")},
	} {
		l, err := crane.Layer(files)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	pushed := reg.PushImage(t, "unpack/whiteout", "v1", img, "alice", pass)
	mustSucceed(t, n.pull(n.b9, pushed.Ref, map[string]string{annKey: "alice:" + pass}), "pull with max_concurrent_unpacks = 2")

	if log := n.cd.logText(); !strings.Contains(log, "parallel=true") {
		t.Errorf("the unpack did not run in parallel mode:\n%s", tail(log, 30))
	}
	var whiteouts, wh []string
	snapshots := filepath.Join(n.dir, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots")
	err = filepath.WalkDir(snapshots, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Name() == ".wh.gone":
			wh = append(wh, path)
		case d.Name() == "gone" && d.Type()&fs.ModeCharDevice != 0:
			fi, err := os.Lstat(path)
			if err != nil {
				return err
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
				whiteouts = append(whiteouts, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(whiteouts) != 1 || len(wh) != 0 {
		t.Errorf("overlayfs whiteouts for data/gone: %v (want one), OCI whiteout files left: %v (want none)", whiteouts, wh)
	}
	n.assertNoSecrets(pass)
}
