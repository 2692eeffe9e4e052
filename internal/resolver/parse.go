package resolver

import (
	"net/http"
	"strings"
)

// authChallenge is one challenge of a WWW-Authenticate header: its scheme
// (lower case) and auth-params (names lower case, values unquoted).
type authChallenge struct {
	scheme string
	params map[string]string
}

// maxChallengeParams bounds the auth-params kept per challenge: a registry
// writes the header, and a few are all any scheme uses.
const maxChallengeParams = 32

// parseAuthHeader parses every WWW-Authenticate value of h (RFC 7235 §4.1):
//
//	challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// containerd's auth.ParseAuthHeader does not allow the optional whitespace
// (BWS) around "=" and loses realm, service and scope written
// `realm = "…"`; this parser does, takes several challenges in one value
// or in several, keeps the first of a repeated parameter, and never fails:
// what it cannot read it skips.
func parseAuthHeader(h http.Header) []authChallenge {
	var out []authChallenge
	for _, v := range h.Values("WWW-Authenticate") {
		out = append(out, parseChallenges(v)...)
	}
	return out
}

func parseChallenges(s string) []authChallenge {
	var out []authChallenge
	p := headerParser{s: s}
	for {
		p.skip(" \t,")
		if p.done() {
			return out
		}
		scheme := p.token()
		if scheme == "" {
			p.i++ // not a token character: skip it
			continue
		}
		c := authChallenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
		p.params(&c)
		out = append(out, c)
	}
}

// params reads c's auth-params up to the next challenge (a token not
// followed by "=") or the end.
func (p *headerParser) params(c *authChallenge) {
	for {
		start := p.i
		p.skip(" \t,")
		name := p.token()
		p.skip(" \t")
		if name != "" && (p.done() || p.s[p.i] != '=') {
			// Not a parameter: the next challenge's scheme (or a token68,
			// which no scheme b9 answers uses; it reads as a scheme and is
			// ignored).
			p.i = start
			return
		}
		if name == "" {
			if p.done() {
				return
			}
			p.i++ // junk ("=" with no name, a stray character): skip it
			continue
		}
		p.i++ // "="
		p.skip(" \t")
		var value string
		var ok bool
		if !p.done() && p.s[p.i] == '"' {
			value, ok = p.quoted()
		} else {
			value = p.token68()
			ok = value != ""
		}
		key := strings.ToLower(name)
		if _, seen := c.params[key]; ok && !seen && len(c.params) < maxChallengeParams {
			c.params[key] = value
		}
	}
}

type headerParser struct {
	s string
	i int
}

func (p *headerParser) done() bool { return p.i >= len(p.s) }

func (p *headerParser) skip(set string) {
	for !p.done() && strings.IndexByte(set, p.s[p.i]) >= 0 {
		p.i++
	}
}

// token reads an RFC 7230 token.
func (p *headerParser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// token68 reads a token value, allowing the characters of token68 too
// ("/" and trailing "=") that registries put in unquoted values.
func (p *headerParser) token68() string {
	start := p.i
	for !p.done() && (isTokenChar(p.s[p.i]) || p.s[p.i] == '/' || p.s[p.i] == '=' || p.s[p.i] == ':') {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string at p.i; ok is false when it is not closed.
func (p *headerParser) quoted() (string, bool) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String(), true
		case '\\':
			if p.done() {
				return "", false
			}
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

// isTokenChar reports whether c is a tchar (RFC 7230 §3.2.6).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
