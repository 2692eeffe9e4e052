package aws

import (
	"fmt"
	"strings"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// ecrPublicRegion is the only region that serves ECR Public's token API.
const ecrPublicRegion = "us-east-1"

// target is where a token is minted: ECR or ECR Public, and for ECR the
// region and partition whose registries it opens.
type target struct {
	public    bool
	region    string
	partition string
	fips      bool
	dualstack bool
}

// targetFor reads the target from the registry, with AWS_REGION only as a
// fallback for hosts that do not name a region (a mirror, a mapped host):
// a token is only good for its region, so a document region that differs
// from the host's is a mistake to report, not a choice to make.
func targetFor(reg registry.Registry, doc document.Document) (target, error) {
	docRegion := strings.TrimSpace(doc.Get(document.KeyAWSRegion).Reveal())
	var t target
	switch reg.Kind {
	case registry.KindECRPublic:
		return target{public: true, region: ecrPublicRegion, partition: "aws"}, nil
	case registry.KindECR:
		t = target{region: reg.Region, partition: reg.Partition, fips: reg.FIPS, dualstack: reg.DualStack}
		if t.region == "" {
			t.region = docRegion
		} else if docRegion != "" && docRegion != t.region {
			return target{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAWSRegion,
				Reason: fmt.Sprintf("does not match the region %s of registry %s; an ECR token only works in its own region", t.region, reg.Host)}
		}
	case registry.KindGeneric:
		t.region = docRegion
	default:
		return target{}, &document.Error{Source: doc.Source, Field: "type",
			Reason: fmt.Sprintf("type aws cannot make credentials for %s, a %s registry", reg.Host, reg.Kind)}
	}
	if t.region == "" {
		return target{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAWSRegion,
			Reason: fmt.Sprintf("missing; registry %s does not name an AWS region", reg.Host)}
	}
	if !validRegion(t.region) {
		return target{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAWSRegion,
			Reason: "not an AWS region name (want lower-case letters, digits and dashes)"}
	}
	if t.partition == "" {
		t.partition = partitionOf(t.region)
	}
	return t, nil
}

func validRegion(r string) bool {
	if len(r) > 64 {
		return false
	}
	return r != "" && strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" && r[0] != '-'
}

// partitionOf names a region's partition, for cache scopes of hosts that
// did not come with one.
func partitionOf(region string) string {
	for _, p := range []struct{ prefix, partition string }{
		{"cn-", "aws-cn"}, {"us-gov-", "aws-us-gov"}, {"us-isob-", "aws-iso-b"}, {"us-isof-", "aws-iso-f"},
		{"us-iso-", "aws-iso"}, {"eu-isoe-", "aws-iso-e"}, {"eusc-", "aws-eusc"},
	} {
		if strings.HasPrefix(region, p.prefix) {
			return p.partition
		}
	}
	return "aws"
}

// scope is the cache scope of a target: an ECR token opens every registry
// of its partition and region to its principal (the principal is in the
// keychain's key as the document fingerprint). FIPS targets stay apart so
// a FIPS host never gets a token minted through a non-FIPS endpoint.
func (t target) scope() string {
	if t.public {
		return "aws:ecr-public"
	}
	s := "aws:ecr:" + t.partition + ":" + t.region
	if t.fips {
		s += ":fips"
	}
	return s
}
