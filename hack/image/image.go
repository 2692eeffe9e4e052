package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/beam-cloud/b9-resolver/internal/imagebuild"
)

// Where the programs live in the image, and what it runs.
const (
	containerdPath = "/usr/local/bin/containerd-b9"
	ctrPath        = "/usr/local/bin/ctr-b9"
)

// entrypoint is the standalone daemon; the DaemonSet passes its flags.
var entrypoint = []string{containerdPath, "standalone"}

// programs are the files packed from -bin, by name there.
var programs = map[string]string{"containerd-b9": containerdPath, "ctr-b9": ctrPath}

type buildInfo struct {
	Version, Revision, Arch string
	Created                 time.Time
}

// buildImage packs the programs in binDir.
func buildImage(binDir string, info buildInfo) (v1.Image, error) {
	var files []imagebuild.File
	for name, dest := range programs {
		data, err := os.ReadFile(filepath.Join(binDir, name))
		if err != nil {
			return nil, err
		}
		if err := checkStatic(data, info.Arch); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(binDir, name), err)
		}
		files = append(files, imagebuild.File{Path: dest, Mode: 0o755, Data: data})
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "b9-resolver",
		"org.opencontainers.image.description": "per-pod registry credentials on the node's image-pull path (standalone CRI image service)",
		"org.opencontainers.image.source":      "https://github.com/beam-cloud/b9-resolver",
		"org.opencontainers.image.version":     info.Version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	if info.Revision != "" {
		labels["org.opencontainers.image.revision"] = info.Revision
	}
	return imagebuild.Build(imagebuild.Spec{
		Files:        files,
		Entrypoint:   entrypoint,
		Labels:       labels,
		ExposedPorts: []string{"9191/tcp"},
		Created:      info.Created,
		Architecture: info.Arch,
		CreatedBy:    "make image (hack/image)",
	})
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkStatic fails unless data is an ELF executable for arch with no
// program interpreter (no dynamic loader: the image has no libc).
func checkStatic(data []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF program: %w", err)
	}
	defer f.Close()
	if m, ok := elfMachine[arch]; !ok || f.Machine != m {
		return fmt.Errorf("built for %s, want %s", f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (build with CGO_ENABLED=0)")
		}
	}
	return nil
}

// verifyLayout checks the layout in dir and returns its image's digest.
func verifyLayout(dir string) (v1.Hash, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return v1.Hash{}, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return v1.Hash{}, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if len(im.Manifests) != 1 {
		return v1.Hash{}, fmt.Errorf("index.json lists %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.MediaType != types.OCIManifestSchema1 {
		return v1.Hash{}, fmt.Errorf("manifest media type %s, want %s", desc.MediaType, types.OCIManifestSchema1)
	}
	if desc.Annotations[imagebuild.RefNameAnnotation] == "" {
		return v1.Hash{}, fmt.Errorf("index.json entry has no %s", imagebuild.RefNameAnnotation)
	}
	img, err := p.Image(desc.Digest)
	if err != nil {
		return v1.Hash{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != strings.Join(entrypoint, " ") {
		return v1.Hash{}, fmt.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, entrypoint)
	}
	if cf.OS != "linux" {
		return v1.Hash{}, fmt.Errorf("os %q, want linux", cf.OS)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	found := map[string]bool{}
	for _, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			return v1.Hash{}, fmt.Errorf("layer media type %s, want %s", mt, types.OCILayer)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return v1.Hash{}, err
		}
		err = func() error {
			defer rc.Close()
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				path := "/" + h.Name
				for _, want := range programs {
					if path != want {
						continue
					}
					if h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 {
						return fmt.Errorf("%s is not an executable file (mode %o)", path, h.Mode)
					}
					data, err := io.ReadAll(tr)
					if err != nil {
						return err
					}
					if err := checkStatic(data, cf.Architecture); err != nil {
						return fmt.Errorf("%s: %w", path, err)
					}
					found[path] = true
				}
			}
		}()
		if err != nil {
			return v1.Hash{}, err
		}
	}
	for _, want := range programs {
		if !found[want] {
			return v1.Hash{}, fmt.Errorf("%s missing from the image", want)
		}
	}
	return desc.Digest, nil
}
