package cloudemu

import (
	"net/http"
	"net/url"
)

// Redirect returns a transport that sends every request to target (an
// emulator's URL) whatever host its URL names, keeping that host in the
// Host header. An SDK then resolves its real endpoint (a FIPS or
// dual-stack host, say) and the emulator sees which one, without DNS or an
// endpoint override — the AWS SDK refuses FIPS together with an override.
func Redirect(target string, base http.RoundTripper) http.RoundTripper {
	u, err := url.Parse(target)
	if err != nil {
		panic("cloudemu: bad redirect target: " + err.Error())
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return redirect{to: u, base: base}
}

type redirect struct {
	to   *url.URL
	base http.RoundTripper
}

func (r redirect) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.Host = req.URL.Host
	out.URL.Scheme, out.URL.Host = r.to.Scheme, r.to.Host
	return r.base.RoundTrip(out)
}
