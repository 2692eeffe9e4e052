package registry

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func FuzzParseReference(f *testing.F) {
	for _, tc := range referenceCases {
		f.Add(tc.ref)
	}
	for _, s := range []string{"", "a:b@c", "[::1]/x", "x.io:0/y", "oci://", "docker://docker://x", "a/b/c/d/e:f@sha256:" + strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			if len(s) >= 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q echoes the input", err)
			}
			return
		}
		host := ref.Registry.Host
		if host != strings.ToLower(host) {
			t.Fatalf("host %q not lower-case", host)
		}
		if n, err := NormalizeHost(host); err != nil || n != host {
			t.Fatalf("NormalizeHost(%q) = %q, %v: canonical host not a fixed point", host, n, err)
		}
		if !ref.Registry.Kind.Valid() {
			t.Fatalf("kind %q", ref.Registry.Kind)
		}
		again, err := ParseReference(ref.String())
		if err != nil || again.String() != ref.String() || again.Registry != ref.Registry {
			t.Fatalf("reparse of %q: %+v, %v", ref.String(), again, err)
		}
	})
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"docker.io", "https://index.docker.io/v1/", "localhost:5000", "[::1]:1", "123456789012.dkr.ecr.us-east-1.amazonaws.com", "myreg.eastus.geo.azurecr.io", "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := NormalizeHost(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if h2, err := NormalizeHost(h); err != nil || h2 != h {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, h, h2, err)
		}
		r := Detect(h)
		if r.Host != h || !r.Kind.Valid() {
			t.Fatalf("Detect(%q) = %+v", h, r)
		}
		if r.Kind == KindECR && (len(r.Account) != 12 || r.Region == "" || r.Partition == "") {
			t.Fatalf("ECR without account/region/partition: %+v", r)
		}
	})
}
