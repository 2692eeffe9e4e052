package resolver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
)

// hostsCacheSize bounds the hosts whose configuration is kept; a node pulls
// from few registries.
const hostsCacheSize = 128

// hostsCache keeps, per host, what containerd's ConfigureHosts made of its
// hosts.toml — above all each host's http.Client, whose transport holds the
// open connections — so that pulls reuse connections (and TLS sessions)
// instead of each building new transports. Entries hold no Authorizer and
// nothing else of a pull; Hosts copies them and binds its own.
type hostsCache struct {
	mu sync.Mutex
	m  map[string]*cachedHosts
}

type cachedHosts struct {
	stamp hostsStamp
	hosts []docker.RegistryHost
}

// hostsStamp is what an entry was built from: the host's directory (""
// without one) and the state of it and its hosts.toml. Any change — the
// directory appearing, going, moving to another root, its files (certs.d
// style certificates) being added or removed, hosts.toml being edited —
// makes a new stamp.
type hostsStamp struct {
	dir      string
	dirMod   time.Time
	file     bool
	fileMod  time.Time
	fileSize int64
}

// stampOf stats dir and its hosts.toml; ok is false when they cannot be
// stat'ed, and the host is then configured afresh (reporting the error).
func stampOf(dir string) (s hostsStamp, ok bool) {
	if dir == "" {
		return s, true
	}
	s.dir = dir
	di, err := os.Stat(dir)
	if err != nil {
		return s, false
	}
	s.dirMod = di.ModTime()
	fi, err := os.Stat(filepath.Join(dir, "hosts.toml"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return s, false
	default:
		s.file, s.fileMod, s.fileSize = true, fi.ModTime(), fi.Size()
	}
	return s, true
}

func (c *hostsCache) get(host string, s hostsStamp) ([]docker.RegistryHost, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[host]
	if !ok || e.stamp != s {
		return nil, false
	}
	return e.hosts, true
}

// put stores hosts unless an entry of the same stamp got there first,
// and returns the entry's hosts.
func (c *hostsCache) put(host string, s hostsStamp, hosts []docker.RegistryHost) []docker.RegistryHost {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*cachedHosts{}
	}
	old, ok := c.m[host]
	if ok && old.stamp == s {
		closeIdle(hosts)
		return old.hosts
	}
	if !ok && len(c.m) >= hostsCacheSize {
		for h, e := range c.m {
			delete(c.m, h)
			closeIdle(e.hosts)
			break
		}
	}
	if ok {
		closeIdle(old.hosts)
	}
	c.m[host] = &cachedHosts{stamp: s, hosts: hosts}
	return hosts
}

func (c *hostsCache) drop(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[host]; ok {
		delete(c.m, host)
		closeIdle(e.hosts)
	}
}

// closeIdle closes the idle connections of replaced hosts' transports
// (requests in flight on them finish normally).
func closeIdle(hosts []docker.RegistryHost) {
	for _, h := range hosts {
		if h.Client != nil {
			h.Client.CloseIdleConnections()
		}
	}
}

// configuredHosts returns host's validated hosts.toml configuration, as
// containerd's ConfigureHosts makes it, without Authorizers, from the cache
// while the host's directory and hosts.toml are unchanged. The result is
// shared: callers copy it before changing anything.
func (r *Resolver) configuredHosts(host string) ([]docker.RegistryHost, error) {
	dir := ""
	if len(r.roots) > 0 {
		d, err := r.hostDir(host)
		if err != nil && !errdefs.IsNotFound(err) {
			r.hostsCache.drop(host)
			return nil, err
		}
		dir = d
	}
	// Stat before reading: a change after this is seen by the next pull.
	stamp, cacheable := stampOf(dir)
	if cacheable {
		if hosts, ok := r.hostsCache.get(host, stamp); ok {
			return hosts, nil
		}
	}
	if dir != "" {
		if err := checkHostsFile(dir); err != nil {
			r.hostsCache.drop(host)
			return nil, err
		}
	}
	hosts, err := config.ConfigureHosts(context.Background(), config.HostOptions{
		HostDir: func(string) (string, error) {
			if dir == "" {
				return "", errdefs.ErrNotFound
			}
			return dir, nil
		},
		DefaultTLS:    r.tlsConfig,
		DefaultScheme: r.defaultScheme,
		UpdateClient:  r.updateClient,
	})(host)
	if err != nil {
		r.hostsCache.drop(host)
		return nil, fmt.Errorf("registry hosts for %s: %w", host, err)
	}
	for i := range hosts {
		// containerd's own, unused: ours is bound per pull.
		hosts[i].Authorizer = nil
	}
	if !cacheable {
		return hosts, nil
	}
	return r.hostsCache.put(host, stamp, hosts), nil
}
