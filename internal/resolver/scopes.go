package resolver

import (
	"slices"
	"sync"
)

// Bounds on what is remembered: pods choose the hosts and repositories,
// registries write the scopes, and a forgotten entry costs one 401.
const (
	maxRememberedScopes = 16384 // entries
	maxExtraScopes      = 8     // scopes per entry
	maxScopeLen         = 512   // bytes per scope (longer ones are not kept)
)

// scopeMemory remembers, node-wide, the scopes a host's challenge asked for
// beyond those of the request it answered: a mirror with override_path
// (its repository is "<path>/<name>", the request's scope names "<name>"),
// a registry whose repository path differs from the reference's, or a
// challenge asking for more than repository:<name>:pull. containerd binds
// afresh for every Resolve and every Fetcher, so what one binding learnt
// must outlive it: every later request with the same scopes asks for the
// token the registry wants up front (no 401, and a token server that
// grants only what is asked grants enough).
//
// The key is the host and the request's own scopes (from its context), the
// same for every binding and pull of that repository. Entries are grouped
// by host and matched by comparing scope lists, so the lookup every
// authorised request makes allocates nothing.
type scopeMemory struct {
	mu sync.RWMutex
	m  map[string][]scopeEntry // by host
	n  int                     // entries in all hosts
}

// scopeEntry is what a host's challenge asked for (extra) beyond the
// scopes of the request it answered (request).
type scopeEntry struct {
	request, extra []string
}

func (s *scopeMemory) find(host string, requestScopes []string) int {
	for i, e := range s.m[host] {
		if slices.Equal(e.request, requestScopes) {
			return i
		}
	}
	return -1
}

// extra returns the remembered scopes for requests to host with
// requestScopes.
func (s *scopeMemory) extra(host string, requestScopes []string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i := s.find(host, requestScopes); i >= 0 {
		return s.m[host][i].extra
	}
	return nil
}

// learn records what a challenge asked for beyond requestScopes.
func (s *scopeMemory) learn(host string, requestScopes, asked []string) {
	var extra []string
	for _, x := range asked {
		if len(x) <= maxScopeLen && !slices.Contains(requestScopes, x) && !slices.Contains(extra, x) {
			extra = append(extra, x)
		}
	}
	if len(extra) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]scopeEntry{}
	}
	i := s.find(host, requestScopes)
	var old []string
	if i >= 0 {
		old = s.m[host][i].extra
	}
	merged := slices.Clone(old)
	for _, x := range extra {
		if !slices.Contains(merged, x) && len(merged) < maxExtraScopes {
			merged = append(merged, x)
		}
	}
	if len(merged) == len(old) {
		return
	}
	slices.Sort(merged)
	if i >= 0 {
		s.m[host][i].extra = merged
		return
	}
	if s.n >= maxRememberedScopes {
		for h, es := range s.m { // an arbitrary host's oldest entry: map order is random
			if len(es) <= 1 {
				delete(s.m, h)
			} else {
				s.m[h] = es[1:]
			}
			s.n--
			break
		}
	}
	s.m[host] = append(s.m[host], scopeEntry{request: slices.Clone(requestScopes), extra: merged})
	s.n++
}
