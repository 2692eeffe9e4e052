// Command image builds the b9-resolver container image as an OCI image
// layout, without a container engine and without pulling a base image:
// `make image` builds static binaries (CGO_ENABLED=0, -trimpath, no build
// id) into a folder and this tool packs them into one layer on nothing
// ("FROM scratch"). Every time in the image is SOURCE_DATE_EPOCH (the
// Makefile passes the commit time), so the same commit gives the same
// digest on any machine with the same Go toolchain.
//
//	go run ./hack/image -bin dist/image-bin -out dist/image -name b9-resolver:v1.2.3
//	go run ./hack/image -verify dist/image
//
// -verify reads a layout back and checks what the DaemonSet relies on:
// one image named in index.json, OCI media types, the entrypoint
// `containerd-b9 standalone`, both programs present, executable and
// statically linked (there is no libc in the image).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/imagebuild"
)

func main() {
	bin := flag.String("bin", "", "folder holding the static containerd-b9 and ctr-b9 to pack")
	out := flag.String("out", "dist/image", "OCI layout folder to write (replaced)")
	name := flag.String("name", "b9-resolver:dev", "image name recorded in index.json (org.opencontainers.image.ref.name)")
	version := flag.String("version", "dev", "org.opencontainers.image.version label")
	revision := flag.String("revision", "", "org.opencontainers.image.revision label (the commit)")
	arch := flag.String("arch", "amd64", "the binaries' GOARCH")
	verify := flag.String("verify", "", "check the OCI layout in this folder instead of building")
	flag.Parse()

	if *verify != "" {
		d, err := verifyLayout(*verify)
		if err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: ok (%s)\n", *verify, d)
		return
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "image: -bin is required")
		os.Exit(2)
	}
	created, err := sourceDateEpoch()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
	img, err := buildImage(*bin, buildInfo{Version: *version, Revision: *revision, Arch: *arch, Created: created})
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	if err := imagebuild.WriteLayout(*out, img, *name); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	fmt.Printf("%s: %s %s\n", *out, *name, d)
}

// sourceDateEpoch is SOURCE_DATE_EPOCH (reproducible-builds.org), or the
// Unix epoch when unset.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
