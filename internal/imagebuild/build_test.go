package imagebuild

import (
	"archive/tar"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func testSpec(files ...File) Spec {
	return Spec{
		Files:        files,
		Entrypoint:   []string{"/usr/local/bin/tool", "serve"},
		User:         "0:0",
		Labels:       map[string]string{"org.opencontainers.image.version": "v1"},
		ExposedPorts: []string{"9100/tcp"},
		Created:      time.Unix(1700000000, 0),
		CreatedBy:    "test",
	}
}

var (
	tool   = File{Path: "/usr/local/bin/tool", Mode: 0o755, Data: []byte("#!tool")}
	helper = File{Path: "/usr/local/bin/helper", Mode: 0o755, Data: []byte("#!helper")}
	conf   = File{Path: "/etc/tool/tool.conf", Mode: 0o644, Data: []byte("x = 1\n")}
)

func digest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// Same inputs in any order give the same digest; any change to a file, a
// mode or the time gives another.
func TestBuildReproducible(t *testing.T) {
	build := func(s Spec) string {
		t.Helper()
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		return digest(t, img)
	}
	want := build(testSpec(tool, helper, conf))
	if got := build(testSpec(conf, tool, helper)); got != want {
		t.Errorf("file order changed the digest: %s vs %s", got, want)
	}
	if got := build(testSpec(tool, helper, conf)); got != want {
		t.Errorf("a second build differs: %s vs %s", got, want)
	}
	changed := map[string]Spec{}
	s := testSpec(tool, helper, File{Path: conf.Path, Mode: 0o644, Data: []byte("x = 2\n")})
	changed["content"] = s
	s = testSpec(tool, helper, File{Path: conf.Path, Mode: 0o600, Data: conf.Data})
	changed["mode"] = s
	s = testSpec(tool, helper, conf)
	s.Created = s.Created.Add(time.Second)
	changed["time"] = s
	for name, s := range changed {
		if build(s) == want {
			t.Errorf("%s change kept the digest", name)
		}
	}
}

func TestBuildConfigAndLayer(t *testing.T) {
	img, err := Build(testSpec(tool, conf))
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := img.MediaType()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if mt != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("media types: manifest %s config %s layers %v; want OCI throughout, one layer", mt, m.Config.MediaType, m.Layers)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/tool serve" || cf.Config.User != "0:0" || cf.Config.WorkingDir != "/" {
		t.Errorf("config: entrypoint %q user %q workdir %q", cf.Config.Entrypoint, cf.Config.User, cf.Config.WorkingDir)
	}
	if _, ok := cf.Config.ExposedPorts["9100/tcp"]; !ok || cf.Config.Labels["org.opencontainers.image.version"] != "v1" {
		t.Errorf("config: ports %v labels %v", cf.Config.ExposedPorts, cf.Config.Labels)
	}
	if !cf.Created.Equal(time.Unix(1700000000, 0)) || len(cf.History) != 1 || !cf.History[0].Created.Equal(cf.Created.Time) {
		t.Errorf("created %v, history %+v", cf.Created, cf.History)
	}

	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		mode int64
		typ  byte
		body string
	}
	got := map[string]entry{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || !h.ModTime.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("%s: owner %d:%d %q, time %v; want 0:0 at the spec's time", h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name] = entry{h.Mode, h.Typeflag, string(b)}
		order = append(order, h.Name)
	}
	want := map[string]entry{
		"etc/":               {0o755, tar.TypeDir, ""},
		"etc/tool/":          {0o755, tar.TypeDir, ""},
		"etc/tool/tool.conf": {0o644, tar.TypeReg, "x = 1\n"},
		"usr/":               {0o755, tar.TypeDir, ""},
		"usr/local/":         {0o755, tar.TypeDir, ""},
		"usr/local/bin/":     {0o755, tar.TypeDir, ""},
		"usr/local/bin/tool": {0o755, tar.TypeReg, "#!tool"},
	}
	if len(got) != len(want) {
		t.Errorf("layer entries %v, want %d", order, len(want))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %+v, want %+v", name, got[name], w)
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] > order[i] {
			t.Errorf("entries not sorted: %v", order)
			break
		}
	}
}

func TestBuildRejects(t *testing.T) {
	for name, files := range map[string][]File{
		"none":            nil,
		"relative path":   {{Path: "bin/tool", Mode: 0o755}},
		"root":            {{Path: "/", Mode: 0o755}},
		"twice":           {tool, tool},
		"file and folder": {tool, {Path: "/usr/local/bin/tool/x", Mode: 0o644}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Build(testSpec(files...)); err == nil {
				t.Errorf("Build accepted %+v", files)
			}
		})
	}
}

// The layout reads back as the same image under its ref name, and a
// rewrite replaces the old content.
func TestWriteLayout(t *testing.T) {
	dir := t.TempDir()
	old, _ := Build(testSpec(conf))
	if err := WriteLayout(dir, old, "old:v0"); err != nil {
		t.Fatal(err)
	}
	img, _ := Build(testSpec(tool, conf))
	if err := WriteLayout(dir, img, "b9-resolver:v1"); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want the last image only", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.Annotations[RefNameAnnotation] != "b9-resolver:v1" || d.Digest.String() != digest(t, img) || d.MediaType != types.OCIManifestSchema1 {
		t.Errorf("index entry %+v, want %s named b9-resolver:v1", d, digest(t, img))
	}
	back, err := p.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, back) != digest(t, img) {
		t.Error("image read back differs")
	}
}
