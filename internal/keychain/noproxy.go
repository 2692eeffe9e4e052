package keychain

import "net/http"

// WithoutProxy is c for a link-local metadata service (IMDS, the GCE
// metadata server): the same transport settings with no proxy, since the
// node's HTTP(S)_PROXY (set for pulls) must never carry the node's own
// identity token, and metadata services refuse proxied requests.
func WithoutProxy(c *http.Client) *http.Client {
	out := *c
	switch t := c.Transport.(type) {
	case *http.Transport:
		nt := t.Clone()
		nt.Proxy = nil
		out.Transport = nt
	case nil:
		nt := http.DefaultTransport.(*http.Transport).Clone()
		nt.Proxy = nil
		out.Transport = nt
	}
	return &out
}
