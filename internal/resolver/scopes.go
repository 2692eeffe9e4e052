package resolver

import (
	"slices"
	"strings"
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
// same for every binding and pull of that repository.
type scopeMemory struct {
	mu sync.RWMutex
	m  map[string][]string
}

func scopeKey(host string, requestScopes []string) string {
	return host + "\x00" + strings.Join(requestScopes, " ")
}

// extra returns the remembered scopes for requests to host with
// requestScopes.
func (s *scopeMemory) extra(host string, requestScopes []string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[scopeKey(host, requestScopes)]
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
	k := scopeKey(host, requestScopes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]string{}
	}
	old := s.m[k]
	merged := slices.Clone(old)
	for _, x := range extra {
		if !slices.Contains(merged, x) && len(merged) < maxExtraScopes {
			merged = append(merged, x)
		}
	}
	if len(merged) == len(old) {
		return
	}
	if old == nil && len(s.m) >= maxRememberedScopes {
		for k := range s.m { // an arbitrary one: map order is random
			delete(s.m, k)
			break
		}
	}
	slices.Sort(merged)
	s.m[k] = merged
}
