package imagecreds

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/sealed"
)

// Annotation names.
const (
	// DefaultPrefix is the annotation prefix a node reads by default
	// (its annotation_prefix setting).
	DefaultPrefix = document.DefaultAnnotationPrefix
	// Name is the annotation's name after the prefix; a named credential
	// is Name + "." + <name>.
	Name = document.AnnotationName
	// BuildRegistryName and SourceImageName name the build-time
	// credentials' annotations (Name + "." + these).
	BuildRegistryName = "build-registry"
	SourceImageName   = "source-image"
)

// Option configures FromContainerRequest and Validate.
type Option func(*options)

type options struct {
	prefix, name string
	image        string
	build        *pinned
	source       *pinned
	seal         *sealing
}

// pinned is a build-time credential and the registry it is for.
type pinned struct{ registry, creds string }

type sealing struct {
	recipients []string
	namespace  string
	notAfter   time.Time
}

// WithPrefix sets the annotation prefix (the node's annotation_prefix);
// it must end with "/".
func WithPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithName names the credential: its annotation becomes
// <prefix>image-credentials.<name>, so a pod can carry several.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithImage is the image the container pulls. It lets a document whose
// keys do not decide its type take it from the registry (as the node
// does), and tells which host a document naming no registry covers.
func WithImage(ref string) Option { return func(o *options) { o.image = ref } }

// WithBuildRegistryCredentials adds beta9's BuildRegistryCredentials
// ("AWS:<token>" or any document form) for the build registry host
// (ImageServiceConfig.BuildRegistry). They go in their own annotation
// (image-credentials.build-registry) pinned to that registry, so the node
// sends them nowhere else, and only where ImageCredentials does not
// already cover the registry (beta9's precedence: the runtime secret
// first).
func WithBuildRegistryCredentials(buildRegistry, creds string) Option {
	return func(o *options) {
		if creds != "" {
			o.build = &pinned{registry: buildRegistry, creds: creds}
		}
	}
}

// WithSourceImageCredentials adds BuildOptions.SourceImageCreds
// ("user:pass") for the registry of BuildOptions.SourceImage, after the
// build registry's in precedence, in image-credentials.source-image.
func WithSourceImageCredentials(sourceImage, creds string) Option {
	return func(o *options) {
		if creds != "" {
			o.source = &pinned{registry: sourceImage, creds: creds}
		}
	}
}

// WithSealing seals every value for recipients (the nodes' "age1…"
// recipients), bound to the pod's namespace and, unless notAfter is
// zero, valid until then.
func WithSealing(recipients []string, namespace string, notAfter time.Time) Option {
	return func(o *options) {
		o.seal = &sealing{recipients: recipients, namespace: namespace, notAfter: notAfter}
	}
}

func collect(opts []Option) (*options, error) {
	o := &options{prefix: DefaultPrefix}
	for _, opt := range opts {
		opt(o)
	}
	if !strings.HasSuffix(o.prefix, "/") || strings.ContainsAny(o.prefix, " \t\r\n") {
		return nil, fmt.Errorf("annotation prefix %q must end with \"/\" and hold no spaces: %w", o.prefix, errdefs.ErrInvalidArgument)
	}
	if o.name != "" && !validName(o.name) {
		return nil, fmt.Errorf("credential name %q is not a DNS label of at most %d characters (lower-case letters, digits, dashes; a Kubernetes annotation name is at most 63): %w", o.name, maxName, errdefs.ErrInvalidArgument)
	}
	return o, nil
}

// key is the annotation key for a credential name ("" is the main one).
func (o *options) key(name string) string {
	if name == "" {
		return o.prefix + Name
	}
	return o.prefix + Name + "." + name
}

// imageHost is the canonical registry host of WithImage, "" without it.
func (o *options) imageHost() (string, error) {
	if o.image == "" {
		return "", nil
	}
	ref, err := registry.ParseReference(o.image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", o.image, err)
	}
	return ref.Registry.Host, nil
}

// FromContainerRequest returns the annotations that carry a container's
// registry credentials: imageCredentials (ContainerRequest.ImageCredentials,
// in any form beta9 writes — envelope, flat map, user:pass — or already
// sealed) under <prefix>image-credentials[.<name>], and the build-time
// credentials the options add. Every value is checked as the node will
// check it; with WithSealing each is sealed. No credentials give an empty
// map. Errors name the annotation key and the field, never a value.
func FromContainerRequest(imageCredentials string, opts ...Option) (map[string]string, error) {
	o, err := collect(opts)
	if err != nil {
		return nil, err
	}
	host, err := o.imageHost()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	// covered are the hosts an earlier document answers for the image; a
	// later one for the same host would take precedence on the node (a
	// document naming a host beats one naming none), so it is left out.
	covered := map[string]bool{}
	anyHost := false
	if strings.TrimSpace(imageCredentials) != "" {
		key := o.key(o.name)
		docs, err := check(key, imageCredentials, host)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			if d.Registry == "" {
				anyHost = true
				covered[host] = true
			} else {
				covered[d.Registry] = true
			}
		}
		if document.IsSealed(imageCredentials) {
			// Sealed elsewhere: the hosts it covers are unknown here, so it
			// is taken to cover the image's (its likeliest reading).
			anyHost = true
			covered[host] = true
		}
		out[key] = strings.TrimSpace(imageCredentials)
	}
	for _, b := range []struct {
		name string
		p    *pinned
		// fromImage: p.registry is an image reference, not a host.
		fromImage bool
	}{{BuildRegistryName, o.build, false}, {SourceImageName, o.source, true}} {
		if b.p == nil {
			continue
		}
		key := o.key(b.name)
		reg, err := pinHost(key, b.p.registry, b.fromImage)
		if err != nil {
			return nil, err
		}
		if anyHost && host == "" {
			return nil, fmt.Errorf("annotation %s: image credentials naming no registry cover the image's, which is unknown: pass WithImage so %s credentials are added only where they apply: %w",
				key, b.name, errdefs.ErrInvalidArgument)
		}
		if covered[reg] {
			continue
		}
		text, err := pinDocument(key, b.p.creds, reg)
		if err != nil {
			return nil, err
		}
		out[key] = text
		covered[reg] = true
	}
	if o.seal != nil {
		for k, v := range out {
			if document.IsSealed(v) {
				continue
			}
			s, err := sealed.Seal(v, o.seal.recipients, o.seal.namespace, o.seal.notAfter)
			if err != nil {
				return nil, fmt.Errorf("annotation %s: %w", k, err)
			}
			out[k] = s
		}
	}
	return out, nil
}

// Validate checks one annotation value as the node will: a plain document
// with the node's parser and type detection (the same code, so the same
// error text), a sealed one by its form (the control plane cannot open
// it). WithName, WithPrefix and WithImage make the message name the right
// key and detect a type from the image's registry.
func Validate(value string, opts ...Option) error {
	o, err := collect(opts)
	if err != nil {
		return err
	}
	host, err := o.imageHost()
	if err != nil {
		return err
	}
	_, err = check(o.key(o.name), value, host)
	return err
}

// check parses value as the node does; a sealed value is inspected.
func check(key, value, host string) ([]document.Document, error) {
	source := "annotation " + key
	if document.IsSealed(value) {
		_, err := sealed.Inspect(source, value)
		return nil, err
	}
	return document.Parse(source, value, host)
}

// Seal encrypts a credential document for recipients (the nodes' "age1…"
// recipients, several for key rotation or several node pools), bound to
// namespace and, unless notAfter is zero, valid until then. The document
// is validated first; the result is the annotation value.
func Seal(doc string, recipients []string, namespace string, notAfter time.Time) (string, error) {
	if _, err := document.Parse("document", doc, ""); err != nil {
		return "", err
	}
	return sealed.Seal(doc, recipients, namespace, notAfter)
}

// pinHost is the canonical host of a build registry (a host) or a source
// image (a reference).
func pinHost(key, s string, fromImage bool) (string, error) {
	if fromImage {
		ref, err := registry.ParseReference(s)
		if err != nil {
			return "", fmt.Errorf("annotation %s: source image: %w", key, err)
		}
		return ref.Registry.Host, nil
	}
	h, err := registry.NormalizeHost(s)
	if err != nil {
		return "", fmt.Errorf("annotation %s: build registry is not a registry host (want host or host:port): %w", key, errdefs.ErrInvalidArgument)
	}
	return h, nil
}

// pinDocument returns creds as a document naming host: "user:pass"
// becomes a basic envelope; a JSON document gets "registry" where it has
// none (and must not name another).
func pinDocument(key, creds, host string) (string, error) {
	source := "annotation " + key
	if document.IsSealed(creds) {
		return "", fmt.Errorf("%s: build-time credentials must be plain (they are sealed here): %w", source, errdefs.ErrInvalidArgument)
	}
	docs, err := document.Parse(source, creds, host)
	if err != nil {
		return "", err
	}
	for _, d := range docs {
		if d.Registry != "" && d.Registry != host {
			return "", &document.Error{Source: source, Field: "registry", Reason: "names another registry than the one these credentials are for"}
		}
	}
	text := strings.TrimSpace(creds)
	var v any
	if text[0] != '{' && text[0] != '[' {
		user, pass, _ := strings.Cut(text, ":")
		v = map[string]any{"registry": host, "type": "basic", "credentials": map[string]string{document.KeyUsername: user, document.KeyPassword: pass}}
	} else if err := json.Unmarshal([]byte(text), &v); err != nil {
		return "", &document.Error{Source: source, Reason: "malformed JSON"}
	}
	switch x := v.(type) {
	case map[string]any:
		x["registry"] = host
	case []any:
		for _, el := range x {
			if m, ok := el.(map[string]any); ok {
				m["registry"] = host
			}
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", source, err)
	}
	return string(b), nil
}

// maxName keeps "image-credentials.<name>" within Kubernetes' 63
// characters for an annotation key's name.
const maxName = 63 - len(Name) - 1

func validName(s string) bool {
	if s == "" || len(s) > maxName || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
