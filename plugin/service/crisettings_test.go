package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/errdefs"
)

func TestPullSettings(t *testing.T) {
	yes, no := true, false
	cri := &CRIImageSettings{
		Snapshotter: "overlayfs", DisableSnapshotAnnotations: false, MaxConcurrentDownloads: 5,
		ImagePullProgressTimeout: "1m", ImagePullWithSyncFs: true, DiscardUnpackedLayers: true,
		RuntimePlatforms: map[string]CRIImagePlatform{"kata": {Snapshotter: "devmapper"}, "plain": {Platform: "linux/amd64"}},
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		cri  *CRIImageSettings
		want pullSettings
	}{
		{"CRI's defaults when CRI is not known", Config{}, nil, pullSettings{
			snapshotter: defaults.DefaultSnapshotter, runtimeSnapshotters: map[string]string{},
			maxConcurrentDownloads: 3, progressTimeout: 5 * time.Minute, snapshotAnnotations: false}},
		{"CRI's settings followed", Config{}, cri, pullSettings{
			snapshotter: "overlayfs", runtimeSnapshotters: map[string]string{"kata": "devmapper"},
			maxConcurrentDownloads: 5, progressTimeout: time.Minute, snapshotAnnotations: true, syncFs: true, discardUnpackedLayers: true}},
		{"b9's keys override", Config{
			Snapshotter: "native", RuntimeSnapshotters: map[string]string{"kata": "blockfile", "gvisor": "native"},
			MaxConcurrentDownloads: 8, ImagePullProgressTimeout: "0", DisableSnapshotAnnotations: &yes, ImagePullWithSyncFs: &no,
			MaxConcurrentUnpacks: 2,
		}, cri, pullSettings{
			snapshotter: "native", runtimeSnapshotters: map[string]string{"kata": "blockfile", "gvisor": "native"},
			maxConcurrentDownloads: 8, progressTimeout: 0, snapshotAnnotations: false, syncFs: false, discardUnpackedLayers: true,
			maxConcurrentUnpacks: 2}},
		{"one unpack at a time is the sequential unpack", Config{MaxConcurrentUnpacks: 1}, nil, pullSettings{
			snapshotter: defaults.DefaultSnapshotter, runtimeSnapshotters: map[string]string{},
			maxConcurrentDownloads: 3, progressTimeout: 5 * time.Minute, maxConcurrentUnpacks: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &settings{Config: tc.cfg}
			got, err := s.pullSettings(tc.cri)
			if err != nil {
				t.Fatal(err)
			}
			if (got.limiter == nil) != (got.maxConcurrentDownloads == 0) {
				t.Errorf("limiter %v for max_concurrent_downloads %d", got.limiter, got.maxConcurrentDownloads)
			}
			got.limiter = nil
			// The unpacker unpacks layers side by side whenever it has a
			// limiter: only above 1.
			if (got.unpackLimiter != nil) != (tc.want.maxConcurrentUnpacks > 1) || got.maxConcurrentUnpacks != tc.want.maxConcurrentUnpacks {
				t.Errorf("max_concurrent_unpacks %d, limiter %v; want %d", got.maxConcurrentUnpacks, got.unpackLimiter, tc.want.maxConcurrentUnpacks)
			}
			if got.unpacking == nil {
				t.Error("no duplication suppressor")
			}
			if got.snapshotter != tc.want.snapshotter || got.maxConcurrentDownloads != tc.want.maxConcurrentDownloads ||
				got.progressTimeout != tc.want.progressTimeout || got.snapshotAnnotations != tc.want.snapshotAnnotations ||
				got.syncFs != tc.want.syncFs || got.discardUnpackedLayers != tc.want.discardUnpackedLayers ||
				len(got.runtimeSnapshotters) != len(tc.want.runtimeSnapshotters) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			for h, sn := range tc.want.runtimeSnapshotters {
				if got.runtimeSnapshotters[h] != sn {
					t.Errorf("runtime %s: snapshotter %q, want %q", h, got.runtimeSnapshotters[h], sn)
				}
			}
		})
	}
}

func TestPullSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		cri  *CRIImageSettings
		key  string
	}{
		{"CRI's timeout", Config{}, &CRIImageSettings{ImagePullProgressTimeout: "soon"}, "plugins.'io.containerd.cri.v1.images'.image_pull_progress_timeout"},
		{"b9's timeout", Config{ImagePullProgressTimeout: "-1s"}, nil, "b9-resolver config: image_pull_progress_timeout"},
		{"downloads", Config{MaxConcurrentDownloads: -1}, nil, "max_concurrent_downloads"},
		{"unpacks", Config{MaxConcurrentUnpacks: -1}, nil, "max_concurrent_unpacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&settings{Config: tc.cfg}).pullSettings(tc.cri)
			if err == nil || !strings.Contains(err.Error(), tc.key) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v, want InvalidArgument naming %s", err, tc.key)
			}
		})
	}
}

func TestParseCRIImageSettings(t *testing.T) {
	// The JSON containerd's CRI image config marshals to (crictl info).
	got, err := ParseCRIImageSettings([]byte(`{"snapshotter":"native","disableSnapshotAnnotations":false,
		"discardUnpackedLayers":false,"pinned_images":{"sandbox":"registry.k8s.io/pause:3.10"},
		"runtimePlatforms":{"kata":{"platform":"linux/amd64","snapshotter":"devmapper"}},"registry":{"configPath":"/etc/containerd/certs.d"},
		"maxConcurrentDownloads":7,"imagePullProgressTimeout":"2m0s","imagePullWithSyncFs":true,"statsCollectPeriod":10}`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Snapshotter != "native" || got.DisableSnapshotAnnotations || got.MaxConcurrentDownloads != 7 ||
		got.ImagePullProgressTimeout != "2m0s" || !got.ImagePullWithSyncFs || got.RuntimePlatforms["kata"].Snapshotter != "devmapper" {
		t.Errorf("parsed %+v", got)
	}
	// Keys left out keep CRI's defaults.
	got, err = ParseCRIImageSettings([]byte(`{"snapshotter":"native"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !got.DisableSnapshotAnnotations || got.MaxConcurrentDownloads != 3 {
		t.Errorf("defaults not kept: %+v", got)
	}
	if _, err := ParseCRIImageSettings([]byte(`{"maxConcurrentDownloads":"x"}`)); err == nil {
		t.Error("a bad value was accepted")
	}
}

func TestLoadCRIImageSettingsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := write("containerd.toml", `version = 3
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'native'
  disable_snapshot_annotations = false
  max_concurrent_downloads = 6
  image_pull_progress_timeout = '30s'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '/etc/containerd/certs.d'
  [plugins.'io.containerd.cri.v1.images'.runtime_platforms.kata]
    snapshotter = 'devmapper'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gvisor]
  runtime_type = 'io.containerd.runsc.v1'
  snapshotter = 'overlayfs'
[plugins.'io.containerd.grpc.v1.b9-resolver']
  pull_mode = 'direct'
`)
	got, err := LoadCRIImageSettingsFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if got.Snapshotter != "native" || got.DisableSnapshotAnnotations || got.MaxConcurrentDownloads != 6 || got.ImagePullProgressTimeout != "30s" ||
		got.RuntimePlatforms["kata"].Snapshotter != "devmapper" || got.RuntimePlatforms["gvisor"].Snapshotter != "overlayfs" {
		t.Errorf("loaded %+v", got)
	}
	// A file of b9's keys alone: CRI's defaults.
	got, err = LoadCRIImageSettingsFile(write("b9.toml", "pull_mode = 'direct'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if def := DefaultCRIImageSettings(); got.Snapshotter != def.Snapshotter || got.MaxConcurrentDownloads != def.MaxConcurrentDownloads || !got.DisableSnapshotAnnotations {
		t.Errorf("without CRI's table: %+v, want CRI's defaults", got)
	}
	bad := write("bad.toml", "[plugins.'io.containerd.cri.v1.images']\n  max_concurrent_downloads = 'many'\n")
	if _, err := LoadCRIImageSettingsFile(bad); err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), CRIImagesPluginURI) {
		t.Errorf("bad table: %v, want InvalidArgument naming the table", err)
	}
}
