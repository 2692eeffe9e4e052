package service

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

func TestConfigDefaults(t *testing.T) {
	s, err := Config{}.validate()
	if err != nil {
		t.Fatal(err)
	}
	if s.Address != DefaultAddress || s.PullMode != PullDirect || s.Isolation != IsolationStrict ||
		s.AnnotationPrefix != "b9.beam.cloud/" || s.ConfigPath != DefaultConfigPath || s.CacheSize <= 0 || s.mintTimeout <= 0 {
		t.Errorf("defaults not applied: %+v", s.Config)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		cfg Config
	}{
		{"address", Config{Address: "relative.sock"}},
		{"containerd_address", Config{ContainerdAddress: "unix://relative.sock"}},
		{"pull_mode", Config{PullMode: "sideways"}},
		{"isolation", Config{Isolation: "loose"}},
		{"runtime_snapshotters", Config{RuntimeSnapshotters: map[string]string{"kata": ""}}},
		{"annotation_prefix", Config{AnnotationPrefix: "no-slash"}},
		{"cache_size", Config{CacheSize: -1}},
		{"refresh_fraction", Config{RefreshFraction: 1.5}},
		{"refresh_fraction", Config{RefreshFraction: -0.5}},
		// TOML has nan; it fails every comparison.
		{"refresh_fraction", Config{RefreshFraction: math.NaN()}},
		{"mint_timeout", Config{MintTimeout: "soon"}},
		{"registry_mappings", Config{RegistryMappings: []registry.Mapping{{Host: "mirror.local", Kind: "nope"}}}},
		{"trusted_mirrors", Config{TrustedMirrors: []string{"not a host"}}},
		// A node credential for any registry would go to whichever a pod names.
		{"node_credentials.documents", Config{NodeCredentials: NodeCredentials{Documents: []string{`{"type":"gcp"}`}}}},
		{"node_credentials.documents", Config{NodeCredentials: NodeCredentials{Documents: []string{`{"type":"basic","credentials":{"USERNAME":"u","PASSWORD":"` + canaryPass + `","AWS_SECRET_ACCESS_KEY":"x"}}`}}}},
		{"node_credentials.document_files[1]", Config{NodeCredentials: NodeCredentials{DocumentFiles: []string{"/etc/b9/a.json", "b.json"}}}},
		{"node_credentials.docker_config", Config{NodeCredentials: NodeCredentials{DockerConfig: "config.json"}}},
		{"cloud.ambient", Config{Cloud: Cloud{Ambient: []string{"oracle"}}}},
		{"cloud.gcp_key_dirs[0]", Config{Cloud: Cloud{GCPKeyDirs: []string{"keys"}}}},
		{"credentials_address", Config{CredentialsAddress: "creds.sock"}},
		// The CRI socket must not be opened to the Credentials socket's group.
		{"credentials_address", Config{Address: "/run/b9/b9.sock", CredentialsAddress: "/run/b9//b9.sock"}},
		{"credentials_gid", Config{CredentialsAddress: "/run/b9-creds/c.sock", CredentialsGID: -1}},
		{"state_dir", Config{StateDir: "state"}},
		{"verification_policy", Config{VerificationPolicy: "Sometimes"}},
		{"verification_ttl", Config{VerificationTTL: "-1h"}},
		{"verification_allowlist", Config{VerificationPolicy: "NeverVerifyAllowlistedImages", VerificationAllowlist: []string{"busybox"}}},
		{"verification_allowlist", Config{VerificationPolicy: "NeverVerifyAllowlistedImages"}},
		// An allowlist the policy ignores would mislead whoever wrote it.
		{"verification_allowlist", Config{VerificationAllowlist: []string{"registry.example/base/*"}}},
		{"credentials_max_records", Config{CredentialsMaxRecords: -1}},
		{"credentials_max_records_per_source", Config{CredentialsMaxRecordsPerSource: -5}},
	} {
		_, err := tc.cfg.validate()
		if err == nil {
			t.Errorf("%s: bad value accepted", tc.key)
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%s: error %q does not name the key", tc.key, err)
		}
		if strings.Contains(err.Error(), canaryPass) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error leaks a secret or spans lines: %q", tc.key, err)
		}
	}
	// Every bad key is reported, not only the first.
	_, err := Config{PullMode: "sideways", StateDir: "state"}.validate()
	if err == nil || !strings.Contains(err.Error(), "pull_mode:") || !strings.Contains(err.Error(), "state_dir:") {
		t.Errorf("two bad keys: got %v", err)
	}
}

// The keys the keychain's and resolver's options also check are refused
// by New under the key's name, before an option could refuse the value
// under its Go name.
func TestNewNamesTheKeyNotTheOption(t *testing.T) {
	for _, tc := range []struct {
		key string
		cfg Config
	}{
		{"cache_size", Config{CacheSize: -1}},
		{"refresh_fraction", Config{RefreshFraction: math.NaN()}},
		{"refresh_fraction", Config{RefreshFraction: 1}},
		{"mint_timeout", Config{MintTimeout: "-1s"}},
		{"trusted_mirrors", Config{TrustedMirrors: []string{""}}},
	} {
		_, err := New(tc.cfg)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "b9-resolver config: "+tc.key+":") ||
			strings.Contains(err.Error(), "keychain.") || strings.Contains(err.Error(), "resolver.With") {
			t.Errorf("%s: error %v, want the config key's own", tc.key, err)
		}
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "containerd.toml")
	writeFile(t, full, `version = 3
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'native'
[plugins.'io.containerd.grpc.v1.b9-resolver']
  address = '/run/b9/x.sock'
  pull_mode = 'forward'
  [plugins.'io.containerd.grpc.v1.b9-resolver'.runtime_snapshotters]
    kata = 'devmapper'
  [[plugins.'io.containerd.grpc.v1.b9-resolver'.registry_mappings]]
    host = 'mirror.local:5000'
    kind = 'ecr'
    account = '123456789012'
    region = 'us-east-1'
`)
	cfg, err := LoadConfigFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "/run/b9/x.sock" || cfg.PullMode != PullForward || cfg.RuntimeSnapshotters["kata"] != "devmapper" ||
		len(cfg.RegistryMappings) != 1 || cfg.RegistryMappings[0].Region != "us-east-1" {
		t.Errorf("containerd-style file decoded to %+v", cfg)
	}
	if cfg.Isolation != IsolationStrict {
		t.Errorf("unset key lost its default: isolation %q", cfg.Isolation)
	}

	table := filepath.Join(dir, "b9.toml")
	writeFile(t, table, "pull_mode = 'direct'\nsnapshotter = 'native'\n")
	if cfg, err = LoadConfigFile(table); err != nil || cfg.Snapshotter != "native" {
		t.Errorf("table-only file: %+v, %v", cfg, err)
	}

	typo := filepath.Join(dir, "typo.toml")
	writeFile(t, typo, "pul_mode = 'direct'\n")
	if _, err := LoadConfigFile(typo); err == nil || !strings.Contains(err.Error(), "pul_mode") {
		t.Errorf("unknown key: %v, want an error naming it", err)
	}
}

// TestContribConfig keeps contrib/config.toml loadable and its stated
// defaults true.
func TestContribConfig(t *testing.T) {
	cfg, err := LoadConfigFile("../../contrib/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if s.Address != def.Address || s.PullMode != def.PullMode || s.Isolation != def.Isolation ||
		s.AnnotationPrefix != def.AnnotationPrefix || s.CacheSize != def.CacheSize ||
		s.RefreshFraction != def.RefreshFraction || s.MintTimeout != def.MintTimeout ||
		s.ConfigPath != def.ConfigPath || s.ContainerdAddress != def.ContainerdAddress ||
		s.VerificationPolicy != def.VerificationPolicy || s.VerificationTTL != def.VerificationTTL {
		t.Errorf("contrib/config.toml states values that are not the defaults:\n%+v\n%+v", s.Config, *def)
	}
	// Standalone reads CRI's image settings from the same file.
	cri, err := LoadCRIImageSettingsFile("../../contrib/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cri.Snapshotter != "overlayfs" || cri.DisableSnapshotAnnotations {
		t.Errorf("CRI settings from contrib/config.toml: %+v", cri)
	}
}
