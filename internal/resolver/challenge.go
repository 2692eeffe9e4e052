package resolver

import (
	"net/http"
	"sync"
)

// scheme is how a host wants to be authorised.
type scheme uint8

const (
	schemeNone scheme = iota
	schemeBasic
	schemeBearer
)

func (s scheme) String() string {
	switch s {
	case schemeBasic:
		return "basic"
	case schemeBearer:
		return "bearer"
	}
	return "none"
}

// challenge is what a host's 401 said, minus what is per request (scope,
// error): enough to authorise the next request up front.
type challenge struct {
	scheme  scheme
	realm   string // bearer: token endpoint
	service string // bearer
}

// maxChallengeHosts bounds how many hosts' challenges are remembered:
// pods choose the hosts, and a forgotten one costs one 401.
const maxChallengeHosts = 4096

// challenges remembers each host's challenge for the life of the node
// process. Registries do not change scheme or realm between pulls; if one
// does, its next 401 replaces the entry.
type challenges struct {
	mu sync.RWMutex
	m  map[string]challenge
}

func (c *challenges) get(host string) (challenge, bool) {
	c.mu.RLock()
	ch, ok := c.m[host]
	c.mu.RUnlock()
	return ch, ok
}

func (c *challenges) set(host string, ch challenge) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]challenge{}
	}
	if _, ok := c.m[host]; !ok && len(c.m) >= maxChallengeHosts {
		for h := range c.m { // an arbitrary one: map order is random
			delete(c.m, h)
			break
		}
	}
	c.m[host] = ch
	c.mu.Unlock()
}

// parsed is one 401's challenge with its per-response parameters.
type parsed struct {
	challenge
	scope string // bearer scope the registry asked for
	err   string // error= parameter: the presented token was rejected
}

// parseChallenge picks the challenge to answer from a 401: bearer over
// basic (a registry offering both, like Quay, prefers tokens).
func parseChallenge(h http.Header) (parsed, bool) {
	var basic *authChallenge
	all := parseAuthHeader(h)
	for i, c := range all {
		switch c.scheme {
		case "bearer":
			return parsed{
				challenge: challenge{scheme: schemeBearer, realm: c.params["realm"], service: c.params["service"]},
				scope:     c.params["scope"],
				err:       c.params["error"],
			}, true
		case "basic":
			if basic == nil {
				basic = &all[i]
			}
		}
	}
	if basic != nil {
		return parsed{challenge: challenge{scheme: schemeBasic}, err: basic.params["error"]}, true
	}
	return parsed{}, false
}

// Challenge is the challenge of a 401 that pulls answer (bearer over
// basic), as they read it: scheme "basic" or "bearer", and its realm,
// service, scope and error parameters.
type Challenge struct {
	Scheme                       string
	Realm, Service, Scope, Error string
}

// ParseChallenge reads the challenge pulls answer from a 401's headers
// (RFC 7235, optional whitespace around "=" included); ok is false when
// it has no basic or bearer challenge. ctr-b9 check reads challenges with
// it, so a diagnosis reads what a pull reads.
func ParseChallenge(h http.Header) (Challenge, bool) {
	p, ok := parseChallenge(h)
	if !ok {
		return Challenge{}, false
	}
	c := Challenge{Scheme: p.scheme.String(), Realm: p.realm, Service: p.service, Scope: p.scope, Error: p.err}
	if p.scheme == schemeBasic {
		for _, a := range parseAuthHeader(h) {
			if a.scheme == "basic" {
				c.Realm = a.params["realm"]
				break
			}
		}
	}
	return c, true
}
