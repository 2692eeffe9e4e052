package service

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Defaults for Config. They are documented in contrib/config.toml.
const (
	// DefaultAddress is the b9 socket kubelet and crictl are pointed at.
	DefaultAddress = "/run/containerd-b9/b9.sock"
	// DefaultContainerdAddress is stock containerd's socket (standalone mode).
	DefaultContainerdAddress = "/run/containerd/containerd.sock"
	// DefaultConfigPath is CRI's default hosts.toml search path.
	DefaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"
	// Namespace is the containerd namespace CRI keeps its images in.
	Namespace = "k8s.io"
)

// PullMode says who talks to the registry.
type PullMode string

const (
	// PullDirect pulls with the containerd client and our resolver: per-host
	// credentials, token reuse across pulls, remote-snapshotter labels.
	PullDirect PullMode = "direct"
	// PullForward resolves one credential and forwards the pull to
	// containerd's CRI in PullImageRequest.auth, pinned to the image's host.
	PullForward PullMode = "forward"
)

// Isolation says what happens when a pod's own credential fails.
type Isolation string

const (
	// IsolationStrict never tries another source once a pod's annotation
	// names a credential for the host: a pod whose secret is wrong fails
	// rather than pulling with the node's (someone else's) credentials.
	IsolationStrict Isolation = "strict"
	// IsolationFallback tries the request's auth and then the node's
	// credentials when the annotation credential cannot be minted or the
	// registry rejects it. A public document never falls back.
	IsolationFallback Isolation = "fallback"
)

// Config is the plugin's TOML table,
// [plugins.'io.containerd.grpc.v1.b9-resolver'], and the standalone
// daemon's file. Zero values mean the default.
type Config struct {
	// Address is the unix socket the b9 CRI image service listens on. Its
	// folder is created 0700 and the socket is 0600.
	Address string `toml:"address"`
	// ContainerdAddress is containerd's socket. The plugin ignores it (it
	// uses the containerd it runs in); standalone mode dials it.
	ContainerdAddress string `toml:"containerd_address"`
	// PullMode is "direct" (default) or "forward".
	PullMode PullMode `toml:"pull_mode"`
	// Snapshotter unpacks direct-mode pulls; set it to CRI's snapshotter.
	// Empty means containerd's default (overlayfs on Linux).
	Snapshotter string `toml:"snapshotter"`
	// RuntimeSnapshotters picks a snapshotter per runtime handler, as CRI's
	// [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.X]
	// snapshotter does.
	RuntimeSnapshotters map[string]string `toml:"runtime_snapshotters"`
	// ConfigPath is the hosts.toml search path (colon-separated roots, the
	// first root with a folder for the host wins), like CRI's config_path.
	ConfigPath string `toml:"config_path"`
	// TrustedMirrors are hosts.toml mirror hosts that may be given the
	// upstream registry's credential when no document names the mirror
	// itself. Other mirrors get only credentials for their own host.
	TrustedMirrors []string `toml:"trusted_mirrors"`
	// AnnotationPrefix is the prefix of the credential annotations.
	AnnotationPrefix string `toml:"annotation_prefix"`
	// Isolation is "strict" (default) or "fallback".
	Isolation Isolation `toml:"isolation"`
	// NodeCredentials are the node's own credentials (each document names
	// its registry), used for a host no
	// annotation and no request auth covers.
	NodeCredentials NodeCredentials `toml:"node_credentials"`
	// Cloud configures the aws, gcp and azure providers.
	Cloud Cloud `toml:"cloud"`
	// RegistryMappings make a mirror or pull-through cache count as a
	// registry kind (with the account/region its tokens need).
	RegistryMappings []registry.Mapping `toml:"registry_mappings"`
	// CacheSize bounds the keychain's credential cache.
	CacheSize int `toml:"cache_size"`
	// RefreshFraction is how much of a credential's life passes before it
	// is refreshed in the background (0 < f < 1).
	RefreshFraction float64 `toml:"refresh_fraction"`
	// MintTimeout bounds one credential mint (a cloud token call), as a Go
	// duration ("30s").
	MintTimeout string `toml:"mint_timeout"`
	// EnsureSecretPulledImages keeps a pod from running an image another
	// pod pulled with its own credential, for kubelets without
	// KubeletEnsureSecretPulledImages (KEP-2535): ImageStatus answers
	// "absent" for an image only pods' own credentials (annotation or
	// request auth) pulled, so kubelet calls PullImage with the asking
	// pod's credentials even under IfNotPresent, and the registry checks
	// them (one manifest request; the layers stay). Images pulled
	// anonymously or with node credentials, and images older than the
	// service that it never pulled, are not hidden; an image created
	// since (by another client, or a pull whose labelling failed) is,
	// until a pull through this service labels it. Under imagePullPolicy Never a secret-pulled
	// image is then unavailable; a pod starting from one needs the
	// registry. Off by default.
	EnsureSecretPulledImages bool `toml:"ensure_secret_pulled_images"`
	// CredentialsUIDs are the peer uids, besides root, that the Credentials
	// service answers. The b9 socket is root-only (0600), so a
	// uid listed here reaches the service through CredentialsAddress.
	CredentialsUIDs []uint32 `toml:"credentials_uids"`
	// CredentialsAddress, if set, is a second socket that serves only the
	// Credentials service — never the CRI image service, which would let
	// its callers pull with any credential — for snapshotters that do not
	// run as root. It is 0660 of group CredentialsGID (its folder 0750
	// when created); the peer uid check still applies.
	CredentialsAddress string `toml:"credentials_address"`
	// CredentialsGID is CredentialsAddress's group (0: root's).
	CredentialsGID int `toml:"credentials_gid"`
	// StateDir keeps the Credentials service's pull records across
	// restarts, encrypted under a node key kept there (0700/0600). Empty
	// keeps them in memory: after a restart, snapshots pulled before it
	// get NotFound until their image is pulled again. The plugin defaults
	// it to its containerd root folder.
	StateDir string `toml:"state_dir"`
}

// NodeCredentials are the node-level credential sources, lowest in
// precedence after the pod's annotations and the request's auth.
type NodeCredentials struct {
	// DockerConfig is a docker config.json: "auths" entries and the
	// "credHelpers"/"credsStore" helpers (docker-credential-<name> on PATH).
	// It is read at each pull, so edits apply without a restart; a missing
	// file means no credentials.
	DockerConfig string `toml:"docker_config"`
	// Documents are credential documents (any of the annotation forms)
	// written in the config. Each must name its "registry": a node
	// credential for any image would be sent to any registry a pod names.
	Documents []string `toml:"documents"`
	// DocumentFiles each hold one credential document (naming its
	// registry); they are read at each pull so a rotated secret applies
	// without a restart.
	DocumentFiles []string `toml:"document_files"`
}

// Cloud configures the cloud providers. Their API endpoints follow the
// SDKs' standard variables in containerd's environment
// (AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL_STS, GCE_METADATA_HOST,
// AZURE_AUTHORITY_HOST), so a systemd drop-in can point them elsewhere.
type Cloud struct {
	// Ambient lists the providers ("aws", "gcp", "azure") whose node
	// credential documents without keys (node_credentials, like
	// {"type":"aws"}) may use the node's own identity (instance role,
	// IRSA, metadata server, managed identity). A pod's document never
	// does: without keys it fails. Empty by default.
	Ambient []string `toml:"ambient"`
	// AzureIdentityClientID picks the node's user-assigned managed
	// identity for "azure" in Ambient; empty: the system-assigned one.
	AzureIdentityClientID string `toml:"azure_identity_client_id"`
	// GCPKeyDirs are folders GOOGLE_APPLICATION_CREDENTIALS may name key
	// files in. None by default: a pod's path could name the node's key.
	// Any pod may name any regular file under them, so put only keys every
	// pod on the node may use there.
	GCPKeyDirs []string `toml:"gcp_key_dirs"`
	// GCPLoopbackTokenURI accepts service-account keys whose token_uri is
	// on 127.0.0.0/8 or ::1 (token emulators). Off: only Google's.
	GCPLoopbackTokenURI bool `toml:"gcp_loopback_token_uri"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() *Config {
	return &Config{
		Address:           DefaultAddress,
		ContainerdAddress: DefaultContainerdAddress,
		PullMode:          PullDirect,
		ConfigPath:        DefaultConfigPath,
		AnnotationPrefix:  document.DefaultAnnotationPrefix,
		Isolation:         IsolationStrict,
		CacheSize:         keychain.DefaultCacheSize,
		RefreshFraction:   keychain.DefaultRefreshFraction,
		MintTimeout:       keychain.DefaultMintTimeout.String(),
	}
}

// settings is a validated Config in the forms the service uses.
type settings struct {
	Config
	mintTimeout time.Duration
	detector    *registry.Detector
	// nodeDocs are the parsed NodeCredentials.Documents.
	nodeDocs []document.Document
}

// validate fills defaults and checks every field, naming the TOML key of
// the first bad one. It never prints a credential value.
func (c Config) validate() (*settings, error) {
	def := DefaultConfig()
	if c.Address == "" {
		c.Address = def.Address
	}
	if c.ContainerdAddress == "" {
		c.ContainerdAddress = def.ContainerdAddress
	}
	if c.PullMode == "" {
		c.PullMode = def.PullMode
	}
	if c.ConfigPath == "" {
		c.ConfigPath = def.ConfigPath
	}
	if c.AnnotationPrefix == "" {
		c.AnnotationPrefix = def.AnnotationPrefix
	}
	if c.Isolation == "" {
		c.Isolation = def.Isolation
	}
	if c.CacheSize == 0 {
		c.CacheSize = def.CacheSize
	}
	if c.RefreshFraction == 0 {
		c.RefreshFraction = def.RefreshFraction
	}
	if c.MintTimeout == "" {
		c.MintTimeout = def.MintTimeout
	}

	s := &settings{Config: c}
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if !filepath.IsAbs(c.Address) {
		bad("address", "%q is not an absolute socket path", c.Address)
	}
	if a := strings.TrimPrefix(c.ContainerdAddress, "unix://"); !filepath.IsAbs(a) {
		bad("containerd_address", "%q is not an absolute socket path", c.ContainerdAddress)
	}
	if c.PullMode != PullDirect && c.PullMode != PullForward {
		bad("pull_mode", "%q is not %q or %q", c.PullMode, PullDirect, PullForward)
	}
	if c.Isolation != IsolationStrict && c.Isolation != IsolationFallback {
		bad("isolation", "%q is not %q or %q", c.Isolation, IsolationStrict, IsolationFallback)
	}
	if !strings.HasSuffix(c.AnnotationPrefix, "/") || strings.ContainsAny(c.AnnotationPrefix, " \t\r\n") {
		bad("annotation_prefix", "%q must end with \"/\" and hold no spaces (like \"b9.beam.cloud/\")", c.AnnotationPrefix)
	}
	for handler, sn := range c.RuntimeSnapshotters {
		if handler == "" || sn == "" {
			bad("runtime_snapshotters", "runtime handler %q maps to snapshotter %q; both must be set", handler, sn)
		}
	}
	if c.CacheSize < 0 {
		bad("cache_size", "%d is negative", c.CacheSize)
	}
	if c.RefreshFraction <= 0 || c.RefreshFraction >= 1 {
		bad("refresh_fraction", "%v is not between 0 and 1", c.RefreshFraction)
	}
	if d, err := time.ParseDuration(c.MintTimeout); err != nil || d <= 0 {
		bad("mint_timeout", "%q is not a positive Go duration (like \"30s\")", c.MintTimeout)
	} else {
		s.mintTimeout = d
	}
	det, err := registry.NewDetector(c.RegistryMappings)
	if err != nil {
		bad("registry_mappings", "%v", err)
	}
	s.detector = det
	for i, text := range c.NodeCredentials.Documents {
		// Parsed once here so a bad document stops the plugin at start;
		// the error names the index and field, never the value.
		docs, err := document.Parse(fmt.Sprintf("node_credentials.documents[%d]", i), text, "")
		if err == nil {
			docs, err = document.AsNode(docs)
		}
		if err != nil {
			bad("node_credentials.documents", "%v", err)
			continue
		}
		s.nodeDocs = append(s.nodeDocs, docs...)
	}
	for i, f := range c.NodeCredentials.DocumentFiles {
		if !filepath.IsAbs(f) {
			bad("node_credentials.document_files", "[%d] %q is not an absolute path", i, f)
		}
	}
	for i, a := range c.Cloud.Ambient {
		if a != string(document.TypeAWS) && a != string(document.TypeGCP) && a != string(document.TypeAzure) {
			bad("cloud.ambient", "[%d] %q is not \"aws\", \"gcp\" or \"azure\"", i, a)
		}
	}
	for i, d := range c.Cloud.GCPKeyDirs {
		if !filepath.IsAbs(d) {
			bad("cloud.gcp_key_dirs", "[%d] %q is not an absolute path", i, d)
		}
	}
	for i, m := range c.TrustedMirrors {
		if _, err := registry.NormalizeHost(m); err != nil {
			bad("trusted_mirrors", "[%d] %q is not a registry host", i, m)
		}
	}
	if a := c.CredentialsAddress; a != "" && !filepath.IsAbs(a) {
		bad("credentials_address", "%q is not an absolute socket path", a)
	} else if a != "" && filepath.Clean(a) == filepath.Clean(c.Address) {
		bad("credentials_address", "%q is the b9 socket (address); give the Credentials socket a path of its own", a)
	}
	if c.CredentialsGID < 0 {
		bad("credentials_gid", "%d is negative", c.CredentialsGID)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		bad("state_dir", "%q is not an absolute path", c.StateDir)
	}
	if f := c.NodeCredentials.DockerConfig; f != "" && !filepath.IsAbs(f) {
		bad("node_credentials.docker_config", "%q is not an absolute path", f)
	}
	if len(errs) > 0 {
		// One line, so containerd's "failed to load plugin" log shows all of it.
		return nil, fmt.Errorf("b9-resolver config: %s: %w", strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
	}
	return s, nil
}
