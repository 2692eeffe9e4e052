package resolver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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

// hostsRecheck bounds how long an entry lives without any change seen:
// hosts.toml may name certificates outside its directory (ca = "/etc/…"),
// which are not stat'ed, so a rotated one is picked up within this time.
const hostsRecheck = 5 * time.Minute

// hostsStamp is what an entry was built from: the host's directory (""
// without one) and the state of it, its hosts.toml and every file in it.
// Any change — the directory appearing, going, moving to another root, a
// certificate or key in it added, removed or rewritten in place,
// hosts.toml being edited — makes a new stamp, and so does each
// hostsRecheck period.
type hostsStamp struct {
	dir    string
	dirMod time.Time
	files  string // name, size, mtime and inode of each file in dir, hosts.toml too
	period int64
}

// stampOf stats dir and the files in it; ok is false when dir cannot be
// read, and the host is then configured afresh (reporting the error).
func stampOf(dir string) (s hostsStamp, ok bool) {
	s.period = time.Now().UnixNano() / int64(hostsRecheck)
	if dir == "" {
		return s, true
	}
	s.dir = dir
	di, err := os.Stat(dir)
	if err != nil {
		return s, false
	}
	s.dirMod = di.ModTime()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return s, false
	}
	var files strings.Builder
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(dir, e.Name())) // through links, as the loader reads them
		if err != nil {
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&files, "%s\x00%d\x00%d\x00%d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano(), ino)
	}
	s.files = files.String()
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
