package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v3"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/yaml"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/cloud"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/nodekey"
	"github.com/beam-cloud/b9-resolver/internal/sealed"
)

// credFlags are how every command that needs credentials takes them: the
// same inputs the plugin sees on PullImage.
func credFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pod-config", Usage: "crictl pod config (JSON or YAML) whose annotations carry the documents"},
		&cli.StringFlag{Name: "annotations", Usage: "file with a JSON object of annotations (- for stdin)"},
		&cli.StringFlag{Name: "document", Usage: "one credential document (envelope, array, flat JSON or user:pass; @FILE reads a file)"},
		&cli.StringFlag{Name: "creds", Usage: "USER:PASS as PullImageRequest.auth would carry them; @FILE or - reads it (keeps the secret off the command line)"},
		&cli.StringSliceFlag{Name: "node-document", Usage: "a node credential document, as in the plugin's node_credentials.documents, or @FILE as in its document_files; repeatable, in order (lowest precedence; the only kind --aws-ambient/--gcp-ambient/--azure-ambient apply to; @FILE reads a file)"},
		&cli.StringFlag{Name: "docker-config", Usage: "a docker config.json, as the plugin's node_credentials.docker_config: auths, credHelpers, credsStore (lowest precedence)"},
		&cli.StringFlag{Name: "isolation", Value: "strict", Usage: "strict (only the first source that names the host is tried) or fallback, as the plugin's isolation"},
		&cli.StringFlag{Name: "annotation-prefix", Value: document.DefaultAnnotationPrefix, Usage: "prefix of the credential annotation keys"},
		&cli.StringSliceFlag{Name: "identity", Usage: "age identity FILE that opens sealed documents, as the node's sealed.identity_files (0600, yours or root's; repeatable)"},
		&cli.StringFlag{Name: "pod-namespace", Usage: "the pod's namespace a sealed document is checked against (default: --pod-config's metadata.namespace)"},
		&cli.BoolFlag{Name: "require-sealed", Usage: "refuse plain annotation documents, as a node with sealed.require does"},
		mappingFlag(),
		&cli.BoolFlag{Name: "aws-ambient", Usage: "let an aws --node-document without keys use this machine's AWS identity (a pod's document never does)"},
		&cli.BoolFlag{Name: "gcp-ambient", Usage: "let a gcp --node-document without keys use the metadata server, GCE_METADATA_HOST (a pod's document never does)"},
		&cli.BoolFlag{Name: "azure-ambient", Usage: "let an azure --node-document without keys use this VM's managed identity through IMDS, AZURE_POD_IDENTITY_AUTHORITY_HOST (a pod's document never does)"},
		&cli.StringFlag{Name: "azure-identity-client-id", Usage: "with --azure-ambient, the user-assigned managed identity to use (default: system-assigned)"},
		&cli.StringSliceFlag{Name: "gcp-key-dir", Usage: "directory GOOGLE_APPLICATION_CREDENTIALS may name key files under"},
		&cli.BoolFlag{Name: "allow-loopback-token-uri", Usage: "accept service-account keys whose token_uri is on loopback (emulators)"},
		&cli.StringFlag{Name: "node-key", Usage: "the plugin's node key (its state_dir/node.key): fingerprints are then keyed as the plugin keys them, comparable with `ctr-b9 cache ls`; without it they are keyed per invocation"},
	}
}

// What keyed the fingerprints a command shows (fingerprint_key in its
// output).
const (
	fingerprintKeyNode       = "node"
	fingerprintKeyInvocation = "invocation"
)

// describeFingerprintKey says, for people, what a fingerprint_key value
// means for comparing fingerprints.
func describeFingerprintKey(k string) string {
	if k == fingerprintKeyNode {
		return "node key (compares with ctr-b9 cache ls)"
	}
	return "per invocation (random; fingerprints compare only within this output; --node-key to compare with ctr-b9 cache ls)"
}

func mappingFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "registry-mapping", Usage: "HOST=KIND[,account=A][,region=R][,partition=P]: treat HOST (a mirror, a proxy) as a registry of KIND"}
}

// detectorFromFlags builds the host detector with --registry-mapping.
func detectorFromFlags(cmd *cli.Command) (*registry.Detector, error) {
	var mappings []registry.Mapping
	for _, m := range cmd.StringSlice("registry-mapping") {
		host, rest, ok := strings.Cut(m, "=")
		if !ok {
			return nil, usagef("--registry-mapping wants HOST=KIND[,account=A][,region=R][,partition=P]")
		}
		parts := strings.Split(rest, ",")
		mp := registry.Mapping{Host: host, Kind: registry.Kind(parts[0])}
		for _, kv := range parts[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "account":
				mp.Account = v
			case "region":
				mp.Region = v
			case "partition":
				mp.Partition = v
			default:
				return nil, usagef("--registry-mapping: unknown field %q (want account, region, partition)", k)
			}
		}
		mappings = append(mappings, mp)
	}
	d, err := registry.NewDetector(mappings)
	if err != nil {
		return nil, usagef("--registry-mapping: %v", err)
	}
	return d, nil
}

// newKeychain builds the keychain as a node would, from the flags, and
// says what keys its fingerprints. Fingerprints are never an unkeyed hash,
// which would let whoever reads pasted output test password guesses:
// with --node-key they are the plugin's HMAC (derived from the node key as
// the plugin derives it), else an HMAC under a key made for this run and
// forgotten.
func newKeychain(cmd *cli.Command) (*keychain.Keychain, string, error) {
	var kopts []keychain.Option
	keyedBy := fingerprintKeyInvocation
	if path := cmd.String("node-key"); path != "" {
		key, err := nodekey.Load(path)
		if err != nil {
			return nil, "", fmt.Errorf("--node-key: %w", err)
		}
		fpKey, err := nodekey.Derive(key, nodekey.Fingerprint)
		clear(key)
		if err != nil {
			return nil, "", err
		}
		kopts = append(kopts, keychain.WithFingerprintKey(fpKey))
		keyedBy = fingerprintKeyNode
	}
	kc, err := cloud.New(cloud.Config{
		AWSAmbient:            cmd.Bool("aws-ambient"),
		GCPAmbient:            cmd.Bool("gcp-ambient"),
		AzureAmbient:          cmd.Bool("azure-ambient"),
		AzureIdentityClientID: cmd.String("azure-identity-client-id"),
		GCPKeyDirs:            cmd.StringSlice("gcp-key-dir"),
		AllowLoopbackTokenURI: cmd.Bool("allow-loopback-token-uri"),
	}, kopts...)
	return kc, keyedBy, err
}

// flagSources are the credential sources the flags give, as the plugin
// sees them on PullImage: annotation (or --document) documents, --creds as
// PullImageRequest.auth, --node-document and --docker-config as node
// credentials.
type flagSources struct {
	imageHost   string
	annotations []document.Document
	auth        *chain.Candidate
	node        []document.Document
	dockerCfg   string
	strict      bool
}

// chain is the plugin's precedence chain over the flags' sources.
func (f flagSources) chain(det *registry.Detector) chain.Chain {
	return chain.Chain{
		chain.Documents{Tier: chain.TierAnnotation, Docs: f.annotations},
		chain.Auth{Candidate: f.auth},
		chain.Documents{Tier: chain.TierNode, Docs: f.node},
		chain.DockerConfig{Path: f.dockerCfg, Label: "--docker-config", Detector: det},
	}
}

// credentials serves a pull's credentials from the chain, as the plugin's.
func (f flagSources) credentials(kc *keychain.Keychain, det *registry.Detector) chain.Credentials {
	return chain.Credentials{Keychain: kc, Chain: f.chain(det), ImageHost: f.imageHost, Strict: f.strict}
}

// resolve walks the chain for reg as a pull's first request would.
func (f flagSources) resolve(ctx context.Context, kc *keychain.Keychain, det *registry.Detector, reg registry.Registry) (chain.Resolved, error) {
	cands := f.chain(det).For(chain.Query{Host: reg.Host, ImageHost: f.imageHost})
	return chain.Walk(ctx, kc, reg, cands, 0, f.strict, nil)
}

// refAndSources reads the REF argument and the credential flags.
func refAndSources(cmd *cli.Command) (registry.Reference, flagSources, error) {
	ref, err := parseRefArg(cmd)
	if err != nil {
		return registry.Reference{}, flagSources{}, err
	}
	src, err := sourcesFromFlags(cmd, ref.Registry.Host)
	return ref, src, err
}

// sourcesFromFlags reads the credential flags for an image on host.
func sourcesFromFlags(cmd *cli.Command, host string) (flagSources, error) {
	src := flagSources{imageHost: host, dockerCfg: cmd.String("docker-config")}
	switch cmd.String("isolation") {
	case "strict":
		src.strict = true
	case "fallback":
	default:
		return src, usagef("--isolation is strict or fallback")
	}
	docs, err := annotationDocsFromFlags(cmd, host)
	if err != nil {
		return src, err
	}
	src.annotations = docs
	if src.auth, err = authFromFlags(cmd, host); err != nil {
		return src, err
	}
	for _, v := range cmd.StringSlice("node-document") {
		// The plugin parses node documents without the image's host: one
		// node document means the same for every image.
		node, err := documentValue("node-document", v, "")
		if err == nil {
			node, err = document.AsNode(node)
		}
		if err != nil {
			return src, err
		}
		src.node = append(src.node, node...)
	}
	return src, nil
}

// annotationDocsFromFlags returns the documents of --pod-config,
// --annotations or --document.
func annotationDocsFromFlags(cmd *cli.Command, host string) ([]document.Document, error) {
	set := 0
	for _, f := range []string{"pod-config", "annotations", "document"} {
		if cmd.IsSet(f) {
			set++
		}
	}
	if set > 1 {
		return nil, usagef("give only one of --pod-config, --annotations and --document")
	}
	var docs []document.Document
	prefix := cmd.String("annotation-prefix")
	switch {
	case cmd.IsSet("pod-config"):
		ann, ns, err := podAnnotations(cmd.String("pod-config"))
		if err != nil {
			return nil, err
		}
		opts, err := sealedOptions(cmd, ns)
		if err != nil {
			return nil, err
		}
		if docs, err = document.FromAnnotations(ann, prefix, host, opts...); err != nil {
			return nil, err
		}
	case cmd.IsSet("annotations"):
		ann, err := annotationsFile(cmd.String("annotations"))
		if err != nil {
			return nil, err
		}
		opts, err := sealedOptions(cmd, "")
		if err != nil {
			return nil, err
		}
		if docs, err = document.FromAnnotations(ann, prefix, host, opts...); err != nil {
			return nil, err
		}
	case cmd.IsSet("document"):
		opts, err := sealedOptions(cmd, "")
		if err != nil {
			return nil, err
		}
		if docs, err = documentFlag(cmd, "document", host, opts...); err != nil {
			return nil, err
		}
	}
	return docs, nil
}

// authFromFlags turns --creds into the candidate PullImageRequest.auth
// with that username and password gives.
func authFromFlags(cmd *cli.Command, host string) (*chain.Candidate, error) {
	c := cmd.String("creds")
	if c == "" {
		return nil, nil
	}
	if c == "-" || strings.HasPrefix(c, "@") {
		b, err := readInput(strings.TrimPrefix(c, "@"))
		if err != nil {
			return nil, fmt.Errorf("--creds: %w", err)
		}
		c = strings.TrimRight(string(b), "\r\n")
	}
	user, pass, ok := strings.Cut(c, ":")
	if !ok || user == "" || pass == "" {
		return nil, usagef("--creds wants USER:PASS")
	}
	return chain.FromAuthConfig(&runtime.AuthConfig{Username: user, Password: pass}, host, nil)
}

// sealedOptions open sealed documents as a node would: with the
// --identity files, for --pod-namespace (else the pod config's), and
// refuse plain ones with --require-sealed.
func sealedOptions(cmd *cli.Command, podNamespace string) ([]document.Option, error) {
	if ns := cmd.String("pod-namespace"); ns != "" {
		podNamespace = ns
	}
	opts := []document.Option{document.RequireSealed(cmd.Bool("require-sealed"))}
	if files := cmd.StringSlice("identity"); len(files) > 0 {
		// The operator's own identity files, or root's as on a node.
		kr, err := sealed.NewKeyring(files, sealed.WithOwners(uint32(os.Geteuid()), 0))
		if err != nil {
			return nil, fmt.Errorf("--identity: %w", err)
		}
		opts = append(opts, document.WithUnsealer(kr, podNamespace))
	}
	return opts, nil
}

// documentFlag parses the documents of a --document-like flag: its value,
// or with @FILE the file's content. opts open a sealed --document; the
// node document (no opts) is plain, as the plugin's node_credentials.

// documentFlag parses the documents of a --document-like flag: its value,
// or with @FILE the file's content. opts open a sealed --document; the
// node document (no opts) is plain, as the plugin's node_credentials.
func documentFlag(cmd *cli.Command, flag, host string, opts ...document.Option) ([]document.Document, error) {
	return documentValue(flag, cmd.String(flag), host, opts...)
}

// documentValue parses one value of a --document-like flag.
func documentValue(flag, text, host string, opts ...document.Option) ([]document.Document, error) {
	source := "--" + flag
	if strings.HasPrefix(text, "@") {
		b, err := os.ReadFile(text[1:])
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		text, source = string(b), source+" "+text[1:]
	}
	if len(opts) == 0 {
		return document.Parse(source, text, host)
	}
	return document.ParseValue(source, text, host, opts...)
}

// podAnnotations reads the annotations and namespace of a crictl pod config.
func podAnnotations(path string) (map[string]string, string, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, "", fmt.Errorf("--pod-config: %w", err)
	}
	var pod struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Annotations map[string]string `json:"annotations"`
	}
	// sigs.k8s.io/yaml reads JSON and YAML alike, as crictl does.
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return nil, "", fmt.Errorf("--pod-config %s: not a pod config (JSON or YAML with an annotations map)", path)
	}
	return pod.Annotations, pod.Metadata.Namespace, nil
}

func annotationsFile(path string) (map[string]string, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, fmt.Errorf("--annotations: %w", err)
	}
	var ann map[string]string
	if err := yaml.Unmarshal(b, &ann); err != nil {
		return nil, fmt.Errorf("--annotations %s: want a JSON object of string annotations", path)
	}
	return ann, nil
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}
