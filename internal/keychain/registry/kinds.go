package registry

import (
	"regexp"
	"strings"
)

// Kind names a registry family; the values are what `ctr-b9 detect` prints.
type Kind string

const (
	KindDockerHub Kind = "dockerhub"
	KindECR       Kind = "ecr"
	KindECRPublic Kind = "ecr-public"
	KindGCR       Kind = "gcr"
	KindGAR       Kind = "gar"
	KindACR       Kind = "acr"
	KindGHCR      Kind = "ghcr"
	KindNGC       Kind = "ngc"
	KindQuay      Kind = "quay"
	KindGeneric   Kind = "generic"
)

// Kinds lists every kind, for validation and help text.
var Kinds = []Kind{KindDockerHub, KindECR, KindECRPublic, KindGCR, KindGAR, KindACR, KindGHCR, KindNGC, KindQuay, KindGeneric}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool {
	for _, known := range Kinds {
		if k == known {
			return true
		}
	}
	return false
}

// hostRule is one row of the detection table. A host matches when it is
// one of exact or matches pattern (always anchored at both ends); named
// groups fill Registry fields: account, region, fips, dualstack_dash,
// suffix (an AWS DNS suffix, looked up in awsSuffixes) and cloud (an Azure
// top-level domain, looked up in azureClouds).
type hostRule struct {
	kind  Kind
	exact []string
	// hint is a substring every host the pattern matches contains; hosts
	// without it skip the regexp, which keeps detection off the profile.
	hint    string
	pattern *regexp.Regexp
}

// hostRules is the detection table, tried in order. Hosts are lower-case
// and without port when they reach it.
var hostRules = []hostRule{
	{kind: KindDockerHub, exact: []string{DockerHubHost, "index.docker.io", "registry-1.docker.io"}},
	{kind: KindECRPublic, exact: []string{"public.ecr.aws", "ecr-public.aws.com"}},
	{kind: KindGHCR, exact: []string{"ghcr.io"}},
	{kind: KindNGC, exact: []string{"nvcr.io"}},
	{kind: KindQuay, exact: []string{"quay.io"}},
	// amazon-ecr-credential-helper's pattern (ecr-login/api/client.go, 2025-11),
	// with the partition suffixes as a group so they come from awsSuffixes.
	{kind: KindECR, hint: "ecr", pattern: regexp.MustCompile(`^(?P<account>[0-9]{12})\.dkr(?P<dualstack_dash>[.-])ecr(?P<fips>-fips)?\.(?P<region>[a-z0-9][a-z0-9-]*)\.(?P<suffix>` + awsSuffixPattern() + `)$`)},
	{kind: KindGCR, hint: "gcr.io", pattern: regexp.MustCompile(`^(?:(?P<region>[a-z0-9][a-z0-9-]*)\.)?gcr\.io$`)},
	{kind: KindGAR, hint: "-docker.pkg.dev", pattern: regexp.MustCompile(`^(?P<region>[a-z0-9][a-z0-9-]*)-docker\.pkg\.dev$`)},
	{kind: KindGAR, hint: ".rep.pkg.dev", pattern: regexp.MustCompile(`^docker\.(?P<region>[a-z0-9][a-z0-9-]*)\.rep\.pkg\.dev$`)},
	// Login servers: "<name>" or the DNL form "<name>-<hash>", optionally a
	// geo-replica "<name>.<region>.geo". Blob hosts "<name>.<region>.data.azurecr.*"
	// are redirect targets, not registries, and fail this pattern.
	{kind: KindACR, hint: ".azurecr.", pattern: regexp.MustCompile(`^(?P<account>[a-z0-9]+(?:-[a-z0-9]+)?)(?:\.(?P<region>[a-z0-9]+)\.geo)?\.azurecr\.(?P<cloud>io|cn|us|de)$`)},
}

// awsSuffix is one AWS partition's registry DNS suffix.
type awsSuffix struct {
	suffix    string
	partition string
	dualstack bool
}

// awsSuffixes maps ECR registry DNS suffixes to AWS partition ids. New
// partitions are a new row here.
var awsSuffixes = []awsSuffix{
	{"amazonaws.com", "aws", false},
	{"amazonaws.com.cn", "aws-cn", false},
	{"on.aws", "aws", true},
	{"on.amazonwebservices.com.cn", "aws-cn", true},
	{"c2s.ic.gov", "aws-iso", false},
	{"sc2s.sgov.gov", "aws-iso-b", false},
	{"cloud.adc-e.uk", "aws-iso-e", false},
	{"csp.hci.ic.gov", "aws-iso-f", false},
	{"amazonaws.eu", "aws-eusc", false},
}

// awsRegionPartitions overrides the suffix's partition for regions that
// share a commercial suffix: GovCloud lives under amazonaws.com.
var awsRegionPartitions = []struct{ prefix, partition string }{
	{"us-gov-", "aws-us-gov"},
}

// azureClouds maps an ACR top-level domain to its Azure cloud.
var azureClouds = map[string]string{
	"io": "azure",
	"cn": "azure-china",
	"us": "azure-us-gov",
	"de": "azure-germany",
}

func awsSuffixPattern() string {
	alts := make([]string, 0, len(awsSuffixes))
	for _, s := range awsSuffixes {
		alts = append(alts, regexp.QuoteMeta(s.suffix))
	}
	return strings.Join(alts, "|")
}

// classify applies the table to a lower-case hostname without port.
func classify(hostname string) Registry {
	for _, rule := range hostRules {
		for _, h := range rule.exact {
			if hostname == h {
				return Registry{Kind: rule.kind}
			}
		}
		if rule.pattern == nil || !strings.Contains(hostname, rule.hint) {
			continue
		}
		m := rule.pattern.FindStringSubmatch(hostname)
		if m == nil {
			continue
		}
		r := Registry{Kind: rule.kind}
		for i, name := range rule.pattern.SubexpNames() {
			if m[i] == "" {
				continue
			}
			switch name {
			case "account":
				r.Account = m[i]
			case "region":
				r.Region = m[i]
			case "fips":
				r.FIPS = true
			case "dualstack_dash":
				r.DualStack = m[i] == "-"
			case "suffix":
				for _, s := range awsSuffixes {
					if s.suffix == m[i] {
						r.Partition = s.partition
						r.DualStack = r.DualStack || s.dualstack
					}
				}
			case "cloud":
				r.Partition = azureClouds[m[i]]
			}
		}
		if r.Kind == KindECR {
			for _, o := range awsRegionPartitions {
				if strings.HasPrefix(r.Region, o.prefix) {
					r.Partition = o.partition
				}
			}
		}
		return r
	}
	return Registry{Kind: KindGeneric}
}
