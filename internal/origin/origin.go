package origin

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Origin is where a credential may be sent.
type Origin struct {
	Scheme string // lower case
	Host   string // lower-cased host name, IPv6 without brackets
	Port   string // effective port: explicit, or the scheme's default
}

// defaultPorts is each scheme's port when the URL names none.
var defaultPorts = map[string]string{"http": "80", "https": "443"}

// Of is u's origin.
func Of(u *url.URL) Origin {
	return OfHost(u.Scheme, u.Host)
}

// OfHost is the origin of scheme://host, host being host[:port] as in
// url.URL.Host or a docker.RegistryHost's Host.
func OfHost(scheme, host string) Origin {
	o := Origin{Scheme: strings.ToLower(scheme)}
	h, port := host, ""
	// Only a colon after any IPv6 closing bracket can start a port; checking
	// first spares the error net.SplitHostPort would allocate for every
	// port-less host (this runs for each request a credential goes on).
	if strings.LastIndexByte(host, ':') > strings.LastIndexByte(host, ']') {
		if sh, sp, err := net.SplitHostPort(host); err == nil {
			h, port = sh, sp
		}
	}
	if port == "" {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	}
	o.Host = strings.TrimSuffix(strings.ToLower(h), ".")
	if port == "" {
		port = defaultPorts[o.Scheme]
	}
	o.Port = port
	return o
}

// String is scheme://host:port.
func (o Origin) String() string {
	return o.Scheme + "://" + net.JoinHostPort(o.Host, o.Port)
}

// Same reports whether a and b are one origin.
func Same(a, b *url.URL) bool { return Of(a) == Of(b) }

// credentialHeaders are the request headers that carry a credential for
// the origin they were set for.
var credentialHeaders = []string{"Authorization", "Cookie"}

// Transport returns next wrapped so that a redirected request whose origin
// differs from the first request of its chain carries none of the first
// request's Authorization or Cookie headers (Go's client copies them to the
// same host name on another scheme or port, and to subdomains). A header
// set for the redirect target itself (another value, such as the target's
// own anonymous token) is kept.
func Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	if _, ok := next.(transport); ok {
		return next
	}
	return transport{next: next}
}

type transport struct{ next http.RoundTripper }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	first := First(req)
	if first == req || Same(first.URL, req.URL) || !copied(first.Header, req.Header) {
		return t.next.RoundTrip(req)
	}
	// A RoundTripper must not modify the request it was given.
	r := req.Clone(req.Context())
	for _, h := range credentialHeaders {
		if v := r.Header.Get(h); v != "" && v == first.Header.Get(h) {
			r.Header.Del(h)
		}
	}
	return t.next.RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach next.
func (t transport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Unwrap is the wrapped RoundTripper.
func (t transport) Unwrap() http.RoundTripper { return t.next }

// First is the first request of req's redirect chain (req itself when it
// was not created by following a redirect).
func First(req *http.Request) *http.Request {
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	return req
}

// copied reports whether h carries one of first's credential headers.
func copied(first, h http.Header) bool {
	for _, k := range credentialHeaders {
		if v := h.Get(k); v != "" && v == first.Get(k) {
			return true
		}
	}
	return false
}

// CheckRedirect is an http.Client CheckRedirect that stops after 10
// redirects, as Go's default does, and removes the credential headers Go
// copied to a redirect that leaves the first request's origin.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errTooManyRedirects
	}
	if !Same(via[0].URL, req.URL) {
		for _, h := range credentialHeaders {
			req.Header.Del(h)
		}
	}
	return nil
}

type redirectError string

func (e redirectError) Error() string { return string(e) }

const errTooManyRedirects = redirectError("stopped after 10 redirects")
