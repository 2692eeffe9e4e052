package registry

import (
	"fmt"
	"net"
	"strings"

	"github.com/containerd/errdefs"
)

// DockerHubHost is the one name b9-resolver uses for Docker Hub.
const DockerHubHost = "docker.io"

// DockerHubAPIHost is where Docker Hub's registry API is served; containerd
// sends requests (and asks for credentials) under this name.
const DockerHubAPIHost = "registry-1.docker.io"

// Registry is a registry host and what b9-resolver knows of it.
type Registry struct {
	// Host is the canonical host[:port]: lower case, Docker Hub as docker.io.
	Host string `json:"host"`
	Kind Kind   `json:"kind"`
	// Account is the AWS account id (ECR) or the ACR registry name.
	Account string `json:"account,omitempty"`
	// Region is the AWS region, the GAR/GCR location, or an ACR geo-replica region.
	Region string `json:"region,omitempty"`
	// Partition is the AWS partition id (aws, aws-cn, aws-us-gov, aws-iso...)
	// for ECR, or the Azure cloud for ACR.
	Partition string `json:"partition,omitempty"`
	FIPS      bool   `json:"fips"`
	DualStack bool   `json:"dualstack"`
	// Mapped is true when a node-config Mapping, not the host rules, set the kind.
	Mapped bool `json:"mapped,omitempty"`
}

// Mapping makes a host (a mirror, a pull-through cache, a private DNS name)
// count as a registry of a kind, with the account/region its tokens need.
type Mapping struct {
	Host      string `toml:"host" json:"host"`
	Kind      Kind   `toml:"kind" json:"kind"`
	Account   string `toml:"account" json:"account,omitempty"`
	Region    string `toml:"region" json:"region,omitempty"`
	Partition string `toml:"partition" json:"partition,omitempty"`
}

// Detector classifies hosts with the built-in table and, first, the
// configured mappings. The zero Detector uses the table alone.
type Detector struct {
	mappings map[string]Mapping
}

// NewDetector validates mappings and returns a Detector that applies them.
func NewDetector(mappings []Mapping) (*Detector, error) {
	d := &Detector{mappings: make(map[string]Mapping, len(mappings))}
	for i, m := range mappings {
		host, err := NormalizeHost(m.Host)
		if err != nil {
			return nil, fmt.Errorf("registry mapping %d: host: %w", i, err)
		}
		if !m.Kind.Valid() {
			return nil, fmt.Errorf("registry mapping %d (%s): kind %q is not one of %v: %w", i, host, m.Kind, Kinds, errdefs.ErrInvalidArgument)
		}
		if _, dup := d.mappings[host]; dup {
			return nil, fmt.Errorf("registry mapping %d: host %s is mapped twice: %w", i, host, errdefs.ErrInvalidArgument)
		}
		m.Host = host
		d.mappings[host] = m
	}
	return d, nil
}

// Detect classifies an already-normalised host.
func (d *Detector) Detect(host string) Registry {
	if d != nil {
		if m, ok := d.mappings[host]; ok {
			r := Registry{Host: host, Kind: m.Kind, Account: m.Account, Region: m.Region, Partition: m.Partition, Mapped: true}
			if r.Kind == KindECR && r.Partition == "" {
				r.Partition = "aws"
			}
			return r
		}
	}
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	r := classify(hostname)
	r.Host = host
	return r
}

// Detect classifies host with the built-in table alone.
func Detect(host string) Registry { return (*Detector)(nil).Detect(host) }

// NormalizeHost turns what users write for a registry ("https://index.docker.io/v1/",
// "GHCR.io", "localhost:5000/") into the canonical host[:port].
func NormalizeHost(s string) (string, error) {
	h := strings.TrimSpace(s)
	for _, scheme := range []string{"https://", "http://", "docker://", "oci://"} {
		if len(h) >= len(scheme) && strings.EqualFold(h[:len(scheme)], scheme) {
			h = h[len(scheme):]
			break
		}
	}
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	h = strings.ToLower(h)
	if h == "" {
		return "", fmt.Errorf("empty registry host: %w", errdefs.ErrInvalidArgument)
	}
	if !validHost(h) {
		return "", fmt.Errorf("not a registry host name (want host or host:port): %w", errdefs.ErrInvalidArgument)
	}
	if r := classify(h); r.Kind == KindDockerHub {
		return DockerHubHost, nil
	}
	return h, nil
}

// IsDockerHub reports whether host is one of Docker Hub's names.
func IsDockerHub(host string) bool {
	return classify(strings.ToLower(host)).Kind == KindDockerHub
}

// validHost accepts a DNS name, IPv4 or bracketed IPv6, with an optional port.
func validHost(h string) bool {
	name := h
	if host, port, err := net.SplitHostPort(h); err == nil {
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return false
		}
		name = host
		if strings.Contains(name, ":") {
			return net.ParseIP(name) != nil
		}
	} else if strings.HasPrefix(h, "[") {
		return strings.HasSuffix(h, "]") && net.ParseIP(h[1:len(h)-1]) != nil
	}
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		if strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return false
		}
	}
	return true
}
