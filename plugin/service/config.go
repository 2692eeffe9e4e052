package service

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/imageaccess"
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
	// Snapshotter unpacks direct-mode pulls. Empty follows CRI's
	// (io.containerd.cri.v1.images snapshotter; containerd's default,
	// overlayfs, when CRI's table is not known).
	Snapshotter string `toml:"snapshotter"`
	// RuntimeSnapshotters picks a snapshotter per runtime handler, over
	// CRI's runtime_platforms and runtimes.X.snapshotter, which direct
	// pulls follow otherwise.
	RuntimeSnapshotters map[string]string `toml:"runtime_snapshotters"`
	// MaxConcurrentDownloads bounds the layers direct pulls download at
	// once, per pull and node-wide, as CRI's key of the same name does
	// (which applies when this is 0).
	MaxConcurrentDownloads int `toml:"max_concurrent_downloads"`
	// MaxConcurrentUnpacks bounds the layers direct pulls unpack at once,
	// node-wide, like the key of the same name of containerd's transfer
	// service (through which stock CRI pulls). 0 or 1 unpacks each image's
	// layers one after another, as stock CRI does by default; above 1, a
	// snapshotter with the "rebase" capability (overlayfs) unpacks an
	// image's layers side by side and commits them in order.
	MaxConcurrentUnpacks int `toml:"max_concurrent_unpacks"`
	// ImagePullProgressTimeout cancels a direct pull that read nothing
	// from the registry for this long, as CRI's key of the same name does
	// (which applies when this is empty); "0" never cancels.
	ImagePullProgressTimeout string `toml:"image_pull_progress_timeout"`
	// DisableSnapshotAnnotations, when set, overrides CRI's key of the same
	// name: false labels layer snapshots with containerd.io/snapshot/cri.*
	// (image ref, layer digest) for remote snapshotters. The credential-ref
	// label is set either way.
	DisableSnapshotAnnotations *bool `toml:"disable_snapshot_annotations"`
	// ImagePullWithSyncFs, when set, overrides CRI's key of the same name
	// (sync the filesystem after unpacking each layer).
	ImagePullWithSyncFs *bool `toml:"image_pull_with_sync_fs"`
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
	// "absent" for an image the asking pod may not use unchecked
	// (VerificationPolicy, VerificationTTL, the image access records), so
	// kubelet calls PullImage with the pod's credentials even under
	// IfNotPresent, and the registry checks them (the manifest is fetched
	// and checked against its digest; the layers stay). Records are per
	// (repository, image id), never per digest. While the registry is
	// unreachable, a pull is accepted for a credential on the image's
	// record. Under imagePullPolicy Never a hidden image is unavailable.
	// Off by default.
	EnsureSecretPulledImages bool `toml:"ensure_secret_pulled_images"`
	// VerificationPolicy is KEP-2535's policy for
	// ensure_secret_pulled_images: which images a pod may start without
	// the registry checking its credentials. "NeverVerify",
	// "NeverVerifyPreloadedImages" (default: images this service did not
	// pull and that were on the node before it started recording),
	// "NeverVerifyAllowlistedImages" (only VerificationAllowlist) or
	// "AlwaysVerify". An image a pull without a pod credential proved
	// open needs no check under any policy.
	VerificationPolicy imageaccess.Policy `toml:"verification_policy"`
	// VerificationAllowlist are the repositories NeverVerifyAllowlistedImages
	// exempts, in kubelet's syntax: full names without tag or digest
	// ("registry.example/team/app", "docker.io/library/busybox") or
	// prefixes ending in "/*" ("registry.example/base/*").
	VerificationAllowlist []string `toml:"verification_allowlist"`
	// VerificationTTL is how long the registry's acceptance of a pod's
	// annotation credential for an image lets that credential start the
	// image again without asking the registry (ImageStatus then reports
	// the image to that pod), as a Go duration. "0s" (default): every
	// start asks the registry (one manifest request). Either way, while
	// the registry is unreachable (network error, timeout, 5xx — not 401
	// or 403) a pull is accepted for a credential on the image's record.
	VerificationTTL string `toml:"verification_ttl"`
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
	// CredentialsMaxRecords bounds the Credentials service's pull records
	// (per index: refs, host/repository pairs); CredentialsMaxRecordsPerSource
	// bounds each credential source's share (a pod namespace; the node's
	// credentials), so one tenant's flood evicts its own records first. A
	// record whose ref is still on a snapshot is never evicted by them.
	// 0: the defaults, 4096 and 1024.
	CredentialsMaxRecords          int `toml:"credentials_max_records"`
	CredentialsMaxRecordsPerSource int `toml:"credentials_max_records_per_source"`
	// Sealed configures sealed (age-encrypted, namespace-bound) annotation
	// documents.
	Sealed Sealed `toml:"sealed"`
}

// Sealed is the node's side of sealed annotation documents: the age
// identities that open them, and whether plain ones are still accepted.
type Sealed struct {
	// IdentityFiles are age identity files (AGE-SECRET-KEY-1… lines, as
	// `ctr-b9 keygen` writes them), absolute paths or glob patterns such
	// as "/etc/b9-resolver/identities/*.key". Each must be a regular file
	// owned by root with mode 0600 or 0400; a wider one is refused. They
	// are read at start and checked again on every sealed pull, so
	// adding a new file and removing the old one rotates the node's key
	// without a restart.
	IdentityFiles []string `toml:"identity_files"`
	// Require refuses plain-text credential annotations: with it, a pod's
	// registry secret is never readable from the API server, etcd or the
	// sandbox stores. Off by default.
	Require bool `toml:"require"`
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
		Address:            DefaultAddress,
		ContainerdAddress:  DefaultContainerdAddress,
		PullMode:           PullDirect,
		ConfigPath:         DefaultConfigPath,
		AnnotationPrefix:   document.DefaultAnnotationPrefix,
		Isolation:          IsolationStrict,
		CacheSize:          keychain.DefaultCacheSize,
		RefreshFraction:    keychain.DefaultRefreshFraction,
		MintTimeout:        keychain.DefaultMintTimeout.String(),
		VerificationPolicy: imageaccess.DefaultPolicy,
		VerificationTTL:    "0s",
	}
}

// settings is a validated Config in the forms the service uses.
type settings struct {
	Config
	mintTimeout time.Duration
	detector    *registry.Detector
	// verificationTTL and allowlist are VerificationTTL and
	// VerificationAllowlist parsed.
	verificationTTL time.Duration
	allowlist       imageaccess.Allowlist
	// nodeDocs are the parsed NodeCredentials.Documents.
	nodeDocs []document.Document
}

// validate fills defaults and checks every field, naming the TOML key of
// each bad one. It never prints a credential value. Each concern has its
// own check, so a new key goes beside the keys it belongs with.
func (c Config) validate() (*settings, error) {
	c = c.withDefaults()
	s := &settings{Config: c}
	var p problems
	for _, check := range []func(*settings, *problems){
		checkSockets, checkPulls, checkAnnotations, checkCache,
		checkRegistries, checkNodeCredentials, checkCloud, checkCredentialsService, checkSealed, checkEnsure,
	} {
		check(s, &p)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// withDefaults fills every unset key with its default.
func (c Config) withDefaults() Config {
	def := DefaultConfig()
	orDefault(&c.Address, def.Address)
	orDefault(&c.ContainerdAddress, def.ContainerdAddress)
	orDefault(&c.PullMode, def.PullMode)
	orDefault(&c.ConfigPath, def.ConfigPath)
	orDefault(&c.AnnotationPrefix, def.AnnotationPrefix)
	orDefault(&c.Isolation, def.Isolation)
	orDefault(&c.CacheSize, def.CacheSize)
	orDefault(&c.RefreshFraction, def.RefreshFraction)
	orDefault(&c.MintTimeout, def.MintTimeout)
	orDefault(&c.VerificationPolicy, def.VerificationPolicy)
	orDefault(&c.VerificationTTL, def.VerificationTTL)
	return c
}

// orDefault sets *v to def when it holds its zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// problems collects every bad key, so one start shows them all.
type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// absPath reports key when path is not absolute.
func (p *problems) absPath(key, what, path string) {
	if !filepath.IsAbs(path) {
		p.add(key, "%q is not an absolute %s", path, what)
	}
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	// One line, so containerd's "failed to load plugin" log shows all of it.
	return fmt.Errorf("b9-resolver config: %s: %w", strings.Join(p, "; "), errdefs.ErrInvalidArgument)
}

// checkSockets: address, containerd_address.
func checkSockets(s *settings, p *problems) {
	p.absPath("address", "socket path", s.Address)
	if !filepath.IsAbs(strings.TrimPrefix(s.ContainerdAddress, "unix://")) {
		p.add("containerd_address", "%q is not an absolute socket path", s.ContainerdAddress)
	}
}

// checkPulls: pull_mode, isolation, runtime_snapshotters.
func checkPulls(s *settings, p *problems) {
	if s.PullMode != PullDirect && s.PullMode != PullForward {
		p.add("pull_mode", "%q is not %q or %q", s.PullMode, PullDirect, PullForward)
	}
	if s.Isolation != IsolationStrict && s.Isolation != IsolationFallback {
		p.add("isolation", "%q is not %q or %q", s.Isolation, IsolationStrict, IsolationFallback)
	}
	for handler, sn := range s.RuntimeSnapshotters {
		if handler == "" || sn == "" {
			p.add("runtime_snapshotters", "runtime handler %q maps to snapshotter %q; both must be set", handler, sn)
		}
	}
}

// checkAnnotations: annotation_prefix.
func checkAnnotations(s *settings, p *problems) {
	if !strings.HasSuffix(s.AnnotationPrefix, "/") || strings.ContainsAny(s.AnnotationPrefix, " \t\r\n") {
		p.add("annotation_prefix", "%q must end with \"/\" and hold no spaces (like \"b9.beam.cloud/\")", s.AnnotationPrefix)
	}
}

// checkCache: cache_size, refresh_fraction, mint_timeout.
func checkCache(s *settings, p *problems) {
	if s.CacheSize < 0 {
		p.add("cache_size", "%d is negative", s.CacheSize)
	}
	// Written so NaN (TOML has nan) fails too.
	if !(s.RefreshFraction > 0 && s.RefreshFraction < 1) {
		p.add("refresh_fraction", "%v is not between 0 and 1", s.RefreshFraction)
	}
	if d, err := time.ParseDuration(s.MintTimeout); err != nil || d <= 0 {
		p.add("mint_timeout", "%q is not a positive Go duration (like \"30s\")", s.MintTimeout)
	} else {
		s.mintTimeout = d
	}
}

// checkRegistries: registry_mappings, trusted_mirrors.
func checkRegistries(s *settings, p *problems) {
	det, err := registry.NewDetector(s.RegistryMappings)
	if err != nil {
		p.add("registry_mappings", "%v", err)
	}
	s.detector = det
	for i, m := range s.TrustedMirrors {
		if _, err := registry.NormalizeHost(m); err != nil {
			p.add("trusted_mirrors", "[%d] %q is not a registry host", i, m)
		}
	}
}

// checkNodeCredentials: node_credentials.*. Inline documents are parsed
// once here so a bad one stops the plugin at start; the error names the
// index and field, never the value.
func checkNodeCredentials(s *settings, p *problems) {
	for i, text := range s.NodeCredentials.Documents {
		docs, err := document.Parse(fmt.Sprintf("node_credentials.documents[%d]", i), text, "")
		if err == nil {
			docs, err = document.AsNode(docs)
		}
		if err != nil {
			p.add("node_credentials.documents", "%v", err)
			continue
		}
		s.nodeDocs = append(s.nodeDocs, docs...)
	}
	for i, f := range s.NodeCredentials.DocumentFiles {
		p.absPath(fmt.Sprintf("node_credentials.document_files[%d]", i), "path", f)
	}
	if f := s.NodeCredentials.DockerConfig; f != "" {
		p.absPath("node_credentials.docker_config", "path", f)
	}
}

// checkCloud: cloud.*.
func checkCloud(s *settings, p *problems) {
	for i, a := range s.Cloud.Ambient {
		if a != string(document.TypeAWS) && a != string(document.TypeGCP) && a != string(document.TypeAzure) {
			p.add("cloud.ambient", "[%d] %q is not \"aws\", \"gcp\" or \"azure\"", i, a)
		}
	}
	for i, d := range s.Cloud.GCPKeyDirs {
		p.absPath(fmt.Sprintf("cloud.gcp_key_dirs[%d]", i), "path", d)
	}
}

// checkCredentialsService: credentials_address, credentials_gid, state_dir,
// credentials_max_records[_per_source].
func checkCredentialsService(s *settings, p *problems) {
	if a := s.CredentialsAddress; a != "" {
		p.absPath("credentials_address", "socket path", a)
		if filepath.Clean(a) == filepath.Clean(s.Address) {
			p.add("credentials_address", "%q is the b9 socket (address); give the Credentials socket a path of its own", a)
		}
	}
	if s.CredentialsGID < 0 {
		p.add("credentials_gid", "%d is negative", s.CredentialsGID)
	}
	if s.CredentialsMaxRecords < 0 {
		p.add("credentials_max_records", "%d is negative", s.CredentialsMaxRecords)
	}
	if s.CredentialsMaxRecordsPerSource < 0 {
		p.add("credentials_max_records_per_source", "%d is negative", s.CredentialsMaxRecordsPerSource)
	}
	if s.StateDir != "" {
		p.absPath("state_dir", "path", s.StateDir)
	}
}

// checkSealed: sealed.*. The identity files themselves are read by New.
func checkSealed(s *settings, p *problems) {
	for i, f := range s.Sealed.IdentityFiles {
		p.absPath(fmt.Sprintf("sealed.identity_files[%d]", i), "path or glob", f)
	}
	if s.Sealed.Require && len(s.Sealed.IdentityFiles) == 0 {
		p.add("sealed.require", "needs sealed.identity_files: without an identity no sealed document opens, so every credential annotation would be refused")
	}
}

// checkEnsure: verification_policy, verification_allowlist,
// verification_ttl (ensure_secret_pulled_images).
func checkEnsure(s *settings, p *problems) {
	if !s.VerificationPolicy.Valid() {
		p.add("verification_policy", "%q is not one of %v", s.VerificationPolicy, imageaccess.Policies)
	}
	if d, err := time.ParseDuration(s.VerificationTTL); err != nil || d < 0 {
		p.add("verification_ttl", "%q is not a Go duration of 0 or more (like \"24h\")", s.VerificationTTL)
	} else {
		s.verificationTTL = d
	}
	if al, err := imageaccess.NewAllowlist(s.VerificationAllowlist); err != nil {
		p.add("verification_allowlist", "%v", err)
	} else {
		s.allowlist = al
	}
	switch {
	case s.VerificationPolicy == imageaccess.NeverVerifyAllowlistedImages && len(s.VerificationAllowlist) == 0:
		p.add("verification_allowlist", "is empty; %s exempts only the repositories listed here", s.VerificationPolicy)
	case s.VerificationPolicy != imageaccess.NeverVerifyAllowlistedImages && len(s.VerificationAllowlist) > 0:
		p.add("verification_allowlist", "applies only with verification_policy = %q (it is %q)", imageaccess.NeverVerifyAllowlistedImages, s.VerificationPolicy)
	}
}
