package imagebuild

import (
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RefNameAnnotation names an image in an OCI layout's index.json (what
// `skopeo copy oci:DIR:NAME`, `crane push` and containerd's import read).
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes img as an OCI image layout in dir (replacing what was
// there), named refName in index.json.
func WriteLayout(dir string, img v1.Image, refName string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("imagebuild: clear %s: %w", dir, err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	p, err := layout.Write(dir, idx)
	if err != nil {
		return fmt.Errorf("imagebuild: layout %s: %w", dir, err)
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{RefNameAnnotation: refName}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return fmt.Errorf("imagebuild: write image to %s: %w", dir, err)
	}
	return nil
}
