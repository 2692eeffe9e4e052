package service

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sync/semaphore"
)

// CRIImagesPluginURI is the table of containerd's CRI image service, whose
// settings direct pulls follow.
const CRIImagesPluginURI = "io.containerd.cri.v1.images"

// CRIImageSettings are the settings of containerd's CRI image service
// ([plugins.'io.containerd.cri.v1.images']) that direct pulls follow, so a
// pull through b9 fetches and unpacks as CRI's own would. The JSON names
// are those CRI reports its config under (`crictl info`): the plugin reads
// the running CRI's config through them. The TOML names are the table's
// keys: standalone mode reads them from containerd's config file.
type CRIImageSettings struct {
	Snapshotter                string                      `json:"snapshotter" toml:"snapshotter"`
	DisableSnapshotAnnotations bool                        `json:"disableSnapshotAnnotations" toml:"disable_snapshot_annotations"`
	DiscardUnpackedLayers      bool                        `json:"discardUnpackedLayers" toml:"discard_unpacked_layers"`
	RuntimePlatforms           map[string]CRIImagePlatform `json:"runtimePlatforms" toml:"runtime_platforms"`
	MaxConcurrentDownloads     int                         `json:"maxConcurrentDownloads" toml:"max_concurrent_downloads"`
	ConcurrentLayerFetchBuffer int                         `json:"concurrentLayerFetchBuffer" toml:"concurrent_layer_fetch_buffer"`
	ImagePullProgressTimeout   string                      `json:"imagePullProgressTimeout" toml:"image_pull_progress_timeout"`
	ImagePullWithSyncFs        bool                        `json:"imagePullWithSyncFs" toml:"image_pull_with_sync_fs"`
}

// CRIImagePlatform is a runtime handler's entry in runtime_platforms. CRI
// uses only its snapshotter when pulling (it unpacks for the node's
// platform), and so does b9.
type CRIImagePlatform struct {
	Platform    string `json:"platform" toml:"platform"`
	Snapshotter string `json:"snapshotter" toml:"snapshotter"`
}

// DefaultCRIImageSettings are CRI's defaults on Linux (containerd 2.x):
// what a containerd whose config leaves the table out uses.
func DefaultCRIImageSettings() CRIImageSettings {
	return CRIImageSettings{
		Snapshotter:                defaults.DefaultSnapshotter,
		DisableSnapshotAnnotations: true,
		MaxConcurrentDownloads:     3,
		ImagePullProgressTimeout:   (5 * time.Minute).String(),
	}
}

// ParseCRIImageSettings reads CRI's image config in its JSON form, over
// CRI's defaults.
func ParseCRIImageSettings(b []byte) (*CRIImageSettings, error) {
	c := DefaultCRIImageSettings()
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("CRI image config: %w", err)
	}
	return &c, nil
}

// AddRuntimeSnapshotters adds the snapshotters CRI's runtime config gives
// runtime handlers ([...'io.containerd.cri.v1.runtime'.containerd.runtimes.X]
// snapshotter), as containerd's CRI plugin does at start: they win over
// runtime_platforms.
func (c *CRIImageSettings) AddRuntimeSnapshotters(byHandler map[string]string) {
	for h, sn := range byHandler {
		if sn == "" {
			continue
		}
		if c.RuntimePlatforms == nil {
			c.RuntimePlatforms = map[string]CRIImagePlatform{}
		}
		p := c.RuntimePlatforms[h]
		p.Snapshotter = sn
		c.RuntimePlatforms[h] = p
	}
}

// pullSettings is how direct pulls fetch and unpack: CRI's image settings
// with the b9 table's overrides applied.
type pullSettings struct {
	snapshotter string
	// runtimeSnapshotters are per runtime handler.
	runtimeSnapshotters map[string]string
	// maxConcurrentDownloads bounds one pull's layer downloads; limiter
	// bounds every direct pull's together, as CRI's does.
	maxConcurrentDownloads int
	limiter                *semaphore.Weighted
	maxConcurrentUnpacks   int
	// unpackLimiter, when set, lets the unpacker apply an image's layers
	// side by side (max_concurrent_unpacks > 1), bounded node-wide.
	unpackLimiter *semaphore.Weighted
	// unpacking lets one pull unpack a layer that several concurrent
	// pulls of different images share, as CRI's suppressor does; the
	// others wait for its snapshot.
	unpacking        *keyedLocks
	layerFetchBuffer int
	// progressTimeout cancels a pull that read nothing for this long while
	// requests were open (0: never).
	progressTimeout       time.Duration
	snapshotAnnotations   bool
	syncFs                bool
	discardUnpackedLayers bool
}

// pullSettings merges cri (CRI's defaults when nil) and the b9 table's
// overrides. Errors name the key.
func (s *settings) pullSettings(cri *CRIImageSettings) (pullSettings, error) {
	c := DefaultCRIImageSettings()
	if cri != nil {
		c = *cri
	}
	p := pullSettings{
		snapshotter:            c.Snapshotter,
		runtimeSnapshotters:    map[string]string{},
		maxConcurrentDownloads: c.MaxConcurrentDownloads,
		layerFetchBuffer:       c.ConcurrentLayerFetchBuffer,
		snapshotAnnotations:    !c.DisableSnapshotAnnotations,
		syncFs:                 c.ImagePullWithSyncFs,
		discardUnpackedLayers:  c.DiscardUnpackedLayers,
		unpacking:              newKeyedLocks(),
	}
	for h, rp := range c.RuntimePlatforms {
		if rp.Snapshotter != "" {
			p.runtimeSnapshotters[h] = rp.Snapshotter
		}
	}
	timeoutKey, timeout := "plugins.'"+CRIImagesPluginURI+"'.image_pull_progress_timeout", c.ImagePullProgressTimeout

	// The b9 table's own keys override.
	if s.Snapshotter != "" {
		p.snapshotter = s.Snapshotter
	}
	maps.Copy(p.runtimeSnapshotters, s.RuntimeSnapshotters)
	if s.MaxConcurrentDownloads != 0 {
		p.maxConcurrentDownloads = s.MaxConcurrentDownloads
	}
	if s.ImagePullProgressTimeout != "" {
		timeoutKey, timeout = "image_pull_progress_timeout", s.ImagePullProgressTimeout
	}
	if s.DisableSnapshotAnnotations != nil {
		p.snapshotAnnotations = !*s.DisableSnapshotAnnotations
	}
	if s.ImagePullWithSyncFs != nil {
		p.syncFs = *s.ImagePullWithSyncFs
	}

	if p.snapshotter == "" {
		p.snapshotter = defaults.DefaultSnapshotter
	}
	if p.maxConcurrentDownloads < 0 {
		return pullSettings{}, fmt.Errorf("b9-resolver config: max_concurrent_downloads: %d is negative: %w", p.maxConcurrentDownloads, errdefs.ErrInvalidArgument)
	}
	if p.maxConcurrentDownloads > 0 {
		p.limiter = semaphore.NewWeighted(int64(p.maxConcurrentDownloads))
	}
	p.maxConcurrentUnpacks = s.MaxConcurrentUnpacks
	switch n := p.maxConcurrentUnpacks; {
	case n < 0:
		return pullSettings{}, fmt.Errorf("b9-resolver config: max_concurrent_unpacks: %d is negative: %w", n, errdefs.ErrInvalidArgument)
	case n > 1:
		// As containerd's transfer service: a limiter only above 1, so 1
		// keeps the sequential unpack (the unpacker goes parallel
		// whenever it has a limiter).
		p.unpackLimiter = semaphore.NewWeighted(int64(n))
	}
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil || d < 0 {
			return pullSettings{}, fmt.Errorf("b9-resolver config: %s: %q is not a Go duration (like \"5m\", \"0\" for none): %w", timeoutKey, timeout, errdefs.ErrInvalidArgument)
		}
		p.progressTimeout = d
	}
	return p, nil
}

// criRuntimePluginURI is CRI's runtime table, whose runtimes may name a
// snapshotter for their images.
const criRuntimePluginURI = "io.containerd.cri.v1.runtime"

// LoadCRIImageSettingsFile reads CRI's image settings from a containerd
// config file (version 3 table names), over CRI's defaults, for standalone
// mode pointed at the same file as containerd. A file with no
// [plugins.'io.containerd.cri.v1.images'] table gives CRI's defaults.
func LoadCRIImageSettingsFile(path string) (*CRIImageSettings, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CRI image config: %w", err)
	}
	var top struct {
		Plugins map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("CRI image config %s: %s: %w", path, tomlErr(err), errdefs.ErrInvalidArgument)
	}
	c := DefaultCRIImageSettings()
	if table, ok := top.Plugins[CRIImagesPluginURI]; ok {
		tb, err := toml.Marshal(table)
		if err == nil {
			err = toml.Unmarshal(tb, &c)
		}
		if err != nil {
			return nil, fmt.Errorf("CRI image config %s: [plugins.'%s']: %s: %w", path, CRIImagesPluginURI, tomlErr(err), errdefs.ErrInvalidArgument)
		}
	}
	if table, ok := top.Plugins[criRuntimePluginURI]; ok {
		var rc struct {
			Containerd struct {
				Runtimes map[string]struct {
					Snapshotter string `toml:"snapshotter"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		}
		tb, err := toml.Marshal(table)
		if err == nil {
			err = toml.Unmarshal(tb, &rc)
		}
		if err != nil {
			return nil, fmt.Errorf("CRI runtime config %s: [plugins.'%s']: %s: %w", path, criRuntimePluginURI, tomlErr(err), errdefs.ErrInvalidArgument)
		}
		byHandler := map[string]string{}
		for h, r := range rc.Containerd.Runtimes {
			byHandler[h] = r.Snapshotter
		}
		c.AddRuntimeSnapshotters(byHandler)
	}
	return &c, nil
}
