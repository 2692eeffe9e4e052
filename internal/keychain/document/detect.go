package document

import (
	"strings"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Username and password keys for basic auth, in precedence order
// (REGISTRY_* > DOCKER_* > DOCKERHUB_* > plain); any other *USERNAME /
// *PASSWORD key comes after them.
var (
	usernameKeys = []string{KeyRegistryUsername, KeyDockerUsername, KeyDockerHubUsername, KeyUsername}
	passwordKeys = []string{KeyRegistryPassword, KeyDockerPassword, KeyDockerHubPassword, KeyPassword}
)

// typeByKind is beta9's last-resort detection from the host, done with the
// registry table rather than beta9's substring match.
var typeByKind = map[registry.Kind]Type{
	registry.KindECR:       TypeAWS,
	registry.KindECRPublic: TypeAWS,
	registry.KindGCR:       TypeGCP,
	registry.KindGAR:       TypeGCP,
	registry.KindACR:       TypeAzure,
}

// DetectType decides a document's type from its keys in beta9's order
// (DetectCredentialType): no keys → public; AWS key id and secret → aws;
// any GCP key → gcp; Azure client id and secret → azure; a token key →
// token; a *USERNAME and a *PASSWORD → basic; else from the host's kind.
// ok is false when nothing decides.
func DetectType(keys map[string]secret.Secret, host string) (t Type, ok bool) {
	has := func(k string) bool { return !keys[k].IsZero() }
	switch {
	case len(keys) == 0:
		return TypePublic, true
	case has(KeyAWSAccessKeyID) && has(KeyAWSSecretKey):
		return TypeAWS, true
	case has(KeyGoogleAppCreds) || has(KeyGCPProjectID) || has(KeyGCPAccessToken):
		return TypeGCP, true
	case has(KeyAzureClientID) && has(KeyAzureClientSecret):
		return TypeAzure, true
	case has(KeyNGCAPIKey) || has(KeyGitHubToken) || has(KeyDockerHubToken):
		return TypeToken, true
	case hasSuffix(keys, "USERNAME") && hasSuffix(keys, "PASSWORD"):
		return TypeBasic, true
	}
	if host != "" {
		if t, ok := typeByKind[registry.Detect(host).Kind]; ok {
			return t, true
		}
	}
	return "", false
}

func hasSuffix(keys map[string]secret.Secret, suffix string) bool {
	for k, v := range keys {
		if strings.HasSuffix(k, suffix) && !v.IsZero() {
			return true
		}
	}
	return false
}

// Username returns the basic-auth username key present in d, by precedence.
func Username(d Document) string {
	if k := firstPresent(d, usernameKeys...); k != "" {
		return k
	}
	return anySuffix(d, "USERNAME")
}

// Password returns the basic-auth password key that goes with the username
// key user (same prefix when present), else the first by precedence.
func Password(d Document, user string) string {
	if user != "" {
		if p := strings.TrimSuffix(user, "USERNAME") + "PASSWORD"; d.Has(p) {
			return p
		}
	}
	if k := firstPresent(d, passwordKeys...); k != "" {
		return k
	}
	return anySuffix(d, "PASSWORD")
}

func firstPresent(d Document, keys ...string) string {
	for _, k := range keys {
		if d.Has(k) {
			return k
		}
	}
	return ""
}

// anySuffix returns the alphabetically first present key ending in suffix,
// so the choice does not depend on map order.
func anySuffix(d Document, suffix string) string {
	best := ""
	for k, v := range d.Keys {
		if strings.HasSuffix(k, suffix) && !v.IsZero() && (best == "" || k < best) {
			best = k
		}
	}
	return best
}
