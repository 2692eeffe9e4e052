package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// want is what detection must find for a reference.
type want struct {
	host, repo, tag, digest string
	kind                    Kind
	account, region, part   string
	fips, dual              bool
}

const dg = "sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb"

var referenceCases = []struct {
	ref  string
	want want
}{
	// Docker Hub: three names, one registry; familiar names; library/.
	{"ubuntu", want{host: "docker.io", repo: "library/ubuntu", tag: "latest", kind: KindDockerHub}},
	{"ubuntu:22.04", want{host: "docker.io", repo: "library/ubuntu", tag: "22.04", kind: KindDockerHub}},
	{"library/ubuntu", want{host: "docker.io", repo: "library/ubuntu", tag: "latest", kind: KindDockerHub}},
	{"beamcloud/beta9:worker", want{host: "docker.io", repo: "beamcloud/beta9", tag: "worker", kind: KindDockerHub}},
	{"docker.io/library/ubuntu", want{host: "docker.io", repo: "library/ubuntu", tag: "latest", kind: KindDockerHub}},
	{"index.docker.io/library/ubuntu", want{host: "docker.io", repo: "library/ubuntu", tag: "latest", kind: KindDockerHub}},
	{"registry-1.docker.io/library/ubuntu", want{host: "docker.io", repo: "library/ubuntu", tag: "latest", kind: KindDockerHub}},
	{"registry-1.docker.io/ubuntu", want{host: "docker.io", repo: "library/ubuntu", tag: "latest", kind: KindDockerHub}},
	{"Docker.IO/library/ubuntu:1", want{host: "docker.io", repo: "library/ubuntu", tag: "1", kind: KindDockerHub}},
	{"docker://ubuntu:24.04", want{host: "docker.io", repo: "library/ubuntu", tag: "24.04", kind: KindDockerHub}},
	{"oci://docker.io/beamcloud/clip", want{host: "docker.io", repo: "beamcloud/clip", tag: "latest", kind: KindDockerHub}},
	{"ubuntu@" + dg, want{host: "docker.io", repo: "library/ubuntu", digest: dg, kind: KindDockerHub}},
	{"ubuntu:22.04@" + dg, want{host: "docker.io", repo: "library/ubuntu", tag: "22.04", digest: dg, kind: KindDockerHub}},

	// ECR: every partition, FIPS, dual-stack.
	{"123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1", want{host: "123456789012.dkr.ecr.us-east-1.amazonaws.com", repo: "app", tag: "v1", kind: KindECR, account: "123456789012", region: "us-east-1", part: "aws"}},
	{"123456789012.dkr.ecr.eu-west-3.amazonaws.com/team/app/svc@" + dg, want{host: "123456789012.dkr.ecr.eu-west-3.amazonaws.com", repo: "team/app/svc", digest: dg, kind: KindECR, account: "123456789012", region: "eu-west-3", part: "aws"}},
	{"123456789012.DKR.ECR.US-WEST-2.AMAZONAWS.COM/app", want{host: "123456789012.dkr.ecr.us-west-2.amazonaws.com", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-west-2", part: "aws"}},
	{"123456789012.dkr.ecr.us-east-1.amazonaws.com:443/app", want{host: "123456789012.dkr.ecr.us-east-1.amazonaws.com:443", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-east-1", part: "aws"}},
	{"210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/app", want{host: "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn", repo: "app", tag: "latest", kind: KindECR, account: "210987654321", region: "cn-north-1", part: "aws-cn"}},
	{"210987654321.dkr.ecr.cn-northwest-1.on.amazonwebservices.com.cn/app", want{host: "210987654321.dkr.ecr.cn-northwest-1.on.amazonwebservices.com.cn", repo: "app", tag: "latest", kind: KindECR, account: "210987654321", region: "cn-northwest-1", part: "aws-cn", dual: true}},
	{"123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/app", want{host: "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-gov-west-1", part: "aws-us-gov"}},
	{"123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app", want{host: "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-gov-west-1", part: "aws-us-gov", fips: true}},
	{"123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/app", want{host: "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-east-1", part: "aws", fips: true}},
	{"123456789012.dkr-ecr.us-west-2.on.aws/app", want{host: "123456789012.dkr-ecr.us-west-2.on.aws", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-west-2", part: "aws", dual: true}},
	{"123456789012.dkr-ecr-fips.us-gov-east-1.on.aws/app", want{host: "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-gov-east-1", part: "aws-us-gov", fips: true, dual: true}},
	{"123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov/app", want{host: "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-iso-east-1", part: "aws-iso"}},
	{"123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/app", want{host: "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-isob-east-1", part: "aws-iso-b"}},
	{"123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk/app", want{host: "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "eu-isoe-west-1", part: "aws-iso-e"}},
	{"123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov/app", want{host: "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "us-isof-south-1", part: "aws-iso-f"}},
	{"123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu/app", want{host: "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu", repo: "app", tag: "latest", kind: KindECR, account: "123456789012", region: "eusc-de-east-1", part: "aws-eusc"}},
	// Pull-through cache repositories live on the same host.
	{"123456789012.dkr.ecr.us-east-1.amazonaws.com/docker-hub/library/nginx:1.27", want{host: "123456789012.dkr.ecr.us-east-1.amazonaws.com", repo: "docker-hub/library/nginx", tag: "1.27", kind: KindECR, account: "123456789012", region: "us-east-1", part: "aws"}},

	// ECR lookalikes are generic.
	{"123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io/app", want{host: "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io", repo: "app", tag: "latest", kind: KindGeneric}},
	{"12345678901.dkr.ecr.us-east-1.amazonaws.com/app", want{host: "12345678901.dkr.ecr.us-east-1.amazonaws.com", repo: "app", tag: "latest", kind: KindGeneric}},
	{"123456789012.dkr.ecr.cn-north-1.on.aws.com.cn/app", want{host: "123456789012.dkr.ecr.cn-north-1.on.aws.com.cn", repo: "app", tag: "latest", kind: KindGeneric}},
	{"evil123456789012.dkr.ecr.us-east-1.amazonaws.com/app", want{host: "evil123456789012.dkr.ecr.us-east-1.amazonaws.com", repo: "app", tag: "latest", kind: KindGeneric}},
	{"x.123456789012.dkr.ecr.us-east-1.amazonaws.com/app", want{host: "x.123456789012.dkr.ecr.us-east-1.amazonaws.com", repo: "app", tag: "latest", kind: KindGeneric}},
	{"ecr.example.com/amazonaws.com/app", want{host: "ecr.example.com", repo: "amazonaws.com/app", tag: "latest", kind: KindGeneric}},

	// ECR Public.
	{"public.ecr.aws/nginx/nginx:latest", want{host: "public.ecr.aws", repo: "nginx/nginx", tag: "latest", kind: KindECRPublic}},
	{"ecr-public.aws.com/docker/library/redis", want{host: "ecr-public.aws.com", repo: "docker/library/redis", tag: "latest", kind: KindECRPublic}},
	{"public.ecr.aws.fake.example.com/x", want{host: "public.ecr.aws.fake.example.com", repo: "x", tag: "latest", kind: KindGeneric}},

	// GCR and Artifact Registry.
	{"gcr.io/my-project/app:v2", want{host: "gcr.io", repo: "my-project/app", tag: "v2", kind: KindGCR}},
	{"us.gcr.io/my-project/app", want{host: "us.gcr.io", repo: "my-project/app", tag: "latest", kind: KindGCR, region: "us"}},
	{"eu.gcr.io/p/app", want{host: "eu.gcr.io", repo: "p/app", tag: "latest", kind: KindGCR, region: "eu"}},
	{"asia.gcr.io/p/app", want{host: "asia.gcr.io", repo: "p/app", tag: "latest", kind: KindGCR, region: "asia"}},
	{"marketplace.gcr.io/google/ubuntu2204", want{host: "marketplace.gcr.io", repo: "google/ubuntu2204", tag: "latest", kind: KindGCR, region: "marketplace"}},
	{"gcr.io.evil.com/p/app", want{host: "gcr.io.evil.com", repo: "p/app", tag: "latest", kind: KindGeneric}},
	{"evilgcr.io/p/app", want{host: "evilgcr.io", repo: "p/app", tag: "latest", kind: KindGeneric}},
	{"us-docker.pkg.dev/p/repo/app:1", want{host: "us-docker.pkg.dev", repo: "p/repo/app", tag: "1", kind: KindGAR, region: "us"}},
	{"europe-west4-docker.pkg.dev/p/repo/app", want{host: "europe-west4-docker.pkg.dev", repo: "p/repo/app", tag: "latest", kind: KindGAR, region: "europe-west4"}},
	{"us-central1-docker.pkg.dev/p/r/img@" + dg, want{host: "us-central1-docker.pkg.dev", repo: "p/r/img", digest: dg, kind: KindGAR, region: "us-central1"}},
	{"docker.europe-west3.rep.pkg.dev/p/r/img", want{host: "docker.europe-west3.rep.pkg.dev", repo: "p/r/img", tag: "latest", kind: KindGAR, region: "europe-west3"}},
	{"docker.us-east4.rep.pkg.dev/p/r/img", want{host: "docker.us-east4.rep.pkg.dev", repo: "p/r/img", tag: "latest", kind: KindGAR, region: "us-east4"}},
	{"us-python.pkg.dev/p/r/img", want{host: "us-python.pkg.dev", repo: "p/r/img", tag: "latest", kind: KindGeneric}},
	{"us-docker.pkg.dev.attacker.net/p/r/img", want{host: "us-docker.pkg.dev.attacker.net", repo: "p/r/img", tag: "latest", kind: KindGeneric}},

	// ACR: clouds, geo-replicas, DNL names; not the data endpoints.
	{"myreg.azurecr.io/app:v1", want{host: "myreg.azurecr.io", repo: "app", tag: "v1", kind: KindACR, account: "myreg", part: "azure"}},
	{"myreg.azurecr.cn/app", want{host: "myreg.azurecr.cn", repo: "app", tag: "latest", kind: KindACR, account: "myreg", part: "azure-china"}},
	{"myreg.azurecr.us/app", want{host: "myreg.azurecr.us", repo: "app", tag: "latest", kind: KindACR, account: "myreg", part: "azure-us-gov"}},
	{"myreg.azurecr.de/app", want{host: "myreg.azurecr.de", repo: "app", tag: "latest", kind: KindACR, account: "myreg", part: "azure-germany"}},
	{"myreg.eastus.geo.azurecr.io/app", want{host: "myreg.eastus.geo.azurecr.io", repo: "app", tag: "latest", kind: KindACR, account: "myreg", region: "eastus", part: "azure"}},
	{"myreg-abc123h.azurecr.io/app", want{host: "myreg-abc123h.azurecr.io", repo: "app", tag: "latest", kind: KindACR, account: "myreg-abc123h", part: "azure"}},
	{"MyReg.AzureCR.io/app", want{host: "myreg.azurecr.io", repo: "app", tag: "latest", kind: KindACR, account: "myreg", part: "azure"}},
	{"myreg.eastus.data.azurecr.io/app", want{host: "myreg.eastus.data.azurecr.io", repo: "app", tag: "latest", kind: KindGeneric}},
	{"myreg.azurecr.io.evil.io/app", want{host: "myreg.azurecr.io.evil.io", repo: "app", tag: "latest", kind: KindGeneric}},
	{"a-b-c.azurecr.io/app", want{host: "a-b-c.azurecr.io", repo: "app", tag: "latest", kind: KindGeneric}},

	// GHCR, NGC, Quay.
	{"ghcr.io/beam-cloud/beta9:latest", want{host: "ghcr.io", repo: "beam-cloud/beta9", tag: "latest", kind: KindGHCR}},
	{"GHCR.IO/owner/img", want{host: "ghcr.io", repo: "owner/img", tag: "latest", kind: KindGHCR}},
	{"ghcr.io.evil.com/owner/img", want{host: "ghcr.io.evil.com", repo: "owner/img", tag: "latest", kind: KindGeneric}},
	{"nvcr.io/nvidia/pytorch:24.01-py3", want{host: "nvcr.io", repo: "nvidia/pytorch", tag: "24.01-py3", kind: KindNGC}},
	{"quay.io/org/app", want{host: "quay.io", repo: "org/app", tag: "latest", kind: KindQuay}},

	// Generic: ports, localhost, IPs.
	{"localhost:5000/app", want{host: "localhost:5000", repo: "app", tag: "latest", kind: KindGeneric}},
	{"localhost/app", want{host: "localhost", repo: "app", tag: "latest", kind: KindGeneric}},
	{"127.0.0.1:5000/team/app:dev", want{host: "127.0.0.1:5000", repo: "team/app", tag: "dev", kind: KindGeneric}},
	{"[::1]:5000/app", want{host: "[::1]:5000", repo: "app", tag: "latest", kind: KindGeneric}},
	{"registry.example.com:5000/app@" + dg, want{host: "registry.example.com:5000", repo: "app", digest: dg, kind: KindGeneric}},
	{"harbor.corp.internal/proj/app:1.0", want{host: "harbor.corp.internal", repo: "proj/app", tag: "1.0", kind: KindGeneric}},
	{"ghcr.io:8443/owner/img", want{host: "ghcr.io:8443", repo: "owner/img", tag: "latest", kind: KindGHCR}},
}

func TestParseReference(t *testing.T) {
	if len(referenceCases) < 60 {
		t.Fatalf("only %d reference cases; the issue asks for at least 60", len(referenceCases))
	}
	for _, tc := range referenceCases {
		t.Run(tc.ref, func(t *testing.T) {
			ref, err := ParseReference(tc.ref)
			if err != nil {
				t.Fatalf("ParseReference: %v", err)
			}
			got := want{
				host: ref.Registry.Host, repo: ref.Repository, tag: ref.Tag, digest: ref.Digest,
				kind: ref.Registry.Kind, account: ref.Registry.Account, region: ref.Registry.Region,
				part: ref.Registry.Partition, fips: ref.Registry.FIPS, dual: ref.Registry.DualStack,
			}
			if got != tc.want {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
			if !strings.HasPrefix(ref.String(), ref.Registry.Host+"/"+ref.Repository) {
				t.Errorf("String() = %q, want it under %s/%s", ref.String(), ref.Registry.Host, ref.Repository)
			}
		})
	}
}

func TestParseReferenceInvalid(t *testing.T) {
	for _, tc := range []struct{ ref, reason string }{
		{"", "empty reference"},
		{"   ", "empty reference"},
		{"Ubuntu", "lowercase"},
		{"docker.io/Library/ubuntu", "lowercase"},
		{"ubuntu:", "invalid reference format"},
		{"ubuntu:bad tag", "invalid reference format"},
		{"ubuntu@sha256:abc", "invalid"},
		{"-bad.example.com/app", "invalid reference format"},
		{"host:99999999/app", "invalid reference format"},
		{"ghcr.io/" + strings.Repeat("a", 300), "longer than"},
		{"ghcr.io/" + strings.Repeat("a/b", 1<<20), "longer than 1024 characters"},
		{"registry.example.com//app", "invalid reference format"},
		{"ubuntu\x00", "invalid reference format"},
		{"http://registry.example.com/app", "invalid reference format"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			_, err := ParseReference(tc.ref)
			if err == nil {
				t.Fatal("no error")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.reason) || !strings.HasPrefix(err.Error(), "image reference: ") {
				t.Errorf("error %q, want it to say %q", err, tc.reason)
			}
			if len(strings.TrimSpace(tc.ref)) > 3 && strings.Contains(err.Error(), strings.TrimSpace(tc.ref)) {
				t.Errorf("error %q echoes the input", err)
			}
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, out := range map[string]string{
		"docker.io":                   "docker.io",
		"index.docker.io":             "docker.io",
		"https://index.docker.io/v1/": "docker.io",
		"registry-1.docker.io":        "docker.io",
		"GHCR.io":                     "ghcr.io",
		"http://localhost:5000/":      "localhost:5000",
		"docker://quay.io":            "quay.io",
		" nvcr.io ":                   "nvcr.io",
		"[::1]:5000":                  "[::1]:5000",
		"10.0.0.1":                    "10.0.0.1",
	} {
		got, err := NormalizeHost(in)
		if err != nil || got != out {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, out)
		}
	}
	for _, bad := range []string{"", "https://", "a b", "host:port", "host:", "-x.io", "x..io", "[::1", "x.io:123456", "ü.io"} {
		if _, err := NormalizeHost(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("NormalizeHost(%q) err = %v, want InvalidArgument", bad, err)
		}
	}
}

func TestIsDockerHub(t *testing.T) {
	for h, want := range map[string]bool{"docker.io": true, "INDEX.docker.io": true, "registry-1.docker.io": true, "docker.com": false, "mirror.docker.io": false} {
		if IsDockerHub(h) != want {
			t.Errorf("IsDockerHub(%q) != %v", h, want)
		}
	}
}

func TestMappings(t *testing.T) {
	d, err := NewDetector([]Mapping{
		{Host: "ecr-mirror.corp.internal:5000", Kind: KindECR, Account: "123456789012", Region: "eu-west-1"},
		{Host: "https://ACR-proxy.corp", Kind: KindACR, Account: "myreg", Partition: "azure"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := d.ParseReference("ecr-mirror.corp.internal:5000/app:1")
	if err != nil {
		t.Fatal(err)
	}
	r := ref.Registry
	if r.Kind != KindECR || r.Account != "123456789012" || r.Region != "eu-west-1" || r.Partition != "aws" || !r.Mapped {
		t.Errorf("mapped ECR mirror = %+v", r)
	}
	if r := d.Detect("acr-proxy.corp"); r.Kind != KindACR || r.Account != "myreg" {
		t.Errorf("mapped ACR proxy = %+v", r)
	}
	// Unmapped hosts still go through the table; a mapping does not leak to
	// the same name on another port.
	if r := d.Detect("ecr-mirror.corp.internal:5001"); r.Kind != KindGeneric || r.Mapped {
		t.Errorf("other port = %+v", r)
	}
	if r := d.Detect("ghcr.io"); r.Kind != KindGHCR {
		t.Errorf("table host through detector = %+v", r)
	}

	for name, bad := range map[string][]Mapping{
		"bad kind":  {{Host: "x.io", Kind: "nexus"}},
		"bad host":  {{Host: "not a host", Kind: KindGeneric}},
		"duplicate": {{Host: "x.io", Kind: KindGeneric}, {Host: "X.IO", Kind: KindQuay}},
	} {
		if _, err := NewDetector(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
}

func TestKindsTableCoversEveryKind(t *testing.T) {
	seen := map[Kind]bool{KindGeneric: true}
	for _, r := range hostRules {
		seen[r.kind] = true
	}
	for _, k := range Kinds {
		if !seen[k] {
			t.Errorf("kind %s has no host rule", k)
		}
		if !k.Valid() {
			t.Errorf("kind %s not valid", k)
		}
	}
	if Kind("nope").Valid() {
		t.Error("unknown kind valid")
	}
}
