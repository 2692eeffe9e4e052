package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one regular file of the image.
type File struct {
	// Path is where the file lives in the image, absolute ("/usr/local/bin/x").
	Path string
	// Mode holds the permission bits (0o755 for a program).
	Mode fs.FileMode
	// Data is the file's content.
	Data []byte
}

// Spec is what an image holds.
type Spec struct {
	Files []File
	// Entrypoint and Cmd as in the OCI config.
	Entrypoint, Cmd []string
	Env             []string
	// User is the config's user ("65532:65532"); empty means root.
	User string
	// WorkingDir defaults to "/".
	WorkingDir string
	Labels     map[string]string
	// ExposedPorts are "9100/tcp" style ports.
	ExposedPorts []string
	// Created stamps the config, the history and every tar entry. The zero
	// time means the Unix epoch.
	Created time.Time
	// OS and Architecture default to linux/amd64.
	OS, Architecture string
	// CreatedBy is the history entry's text.
	CreatedBy string
}

// Build returns the image spec describes, with OCI media types.
func Build(spec Spec) (v1.Image, error) {
	if len(spec.Files) == 0 {
		return nil, errors.New("imagebuild: no files")
	}
	created := spec.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	data, err := layerTar(spec.Files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("imagebuild: layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: spec.CreatedBy},
	})
	if err != nil {
		return nil, fmt.Errorf("imagebuild: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("imagebuild: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = orDefault(spec.OS, "linux"), orDefault(spec.Architecture, "amd64")
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = spec.Env
	cf.Config.User = spec.User
	cf.Config.WorkingDir = orDefault(spec.WorkingDir, "/")
	cf.Config.Labels = spec.Labels
	if len(spec.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.ExposedPorts {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: config: %w", err)
	}
	return img, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// layerTar is the uncompressed layer: parent folders (0755) and files,
// sorted by path, owned by 0:0, stamped with created.
func layerTar(files []File, created time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" {
			return nil, fmt.Errorf("imagebuild: file path %q: want an absolute path to a file", f.Path)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("imagebuild: file path %q given twice", f.Path)
		}
		f.Path = p
		byPath[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for p := range byPath {
		if dirs[p] {
			return nil, fmt.Errorf("imagebuild: %q is both a file and a folder", p)
		}
	}
	names := make([]string, 0, len(dirs)+len(byPath))
	for d := range dirs {
		names = append(names, d)
	}
	for p := range byPath {
		names = append(names, p)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(name, "/"),
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if dirs[name] {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		f := byPath[name]
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, int64(f.Mode.Perm()), int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
