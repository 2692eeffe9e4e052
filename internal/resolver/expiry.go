package resolver

import (
	"bytes"
	"io"
	"net/http"
	"strings"

	"github.com/beam-cloud/b9-resolver/internal/origin"
)

// expiredHeader marks a response expiryTransport rewrote.
const expiredHeader = "X-B9-Resolver-Expired"

// ecrExpired is what ECR answers, with a 403 and no challenge, to a
// request carrying a token past its 12 hours.
var ecrExpired = []byte("authorization token has expired")

// maxErrorBody caps how much of a 403 body is read to recognise it.
const maxErrorBody = 16 << 10

// expiryTransport presents ECR's 403 "Your authorization token has
// expired" to containerd as a 401 (and a manifest HEAD's bodiless 403 as a
// 405, so containerd asks again with a GET whose body can be read). containerd hands only 401s to the
// Authorizer, so without this an expired ECR token fails the pull instead of
// being re-minted; with it, AddResponses invalidates the token and the
// request is retried once.
type expiryTransport struct {
	next   http.RoundTripper
	origin origin.Origin
}

func (t expiryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusForbidden || origin.Of(req.URL) != t.origin || req.Header.Get("Authorization") == "" {
		return resp, err
	}
	if req.Method == http.MethodHead {
		// A HEAD answer has no body to tell "expired" from "denied".
		// containerd re-sends a manifest HEAD answered 405 as a GET, whose
		// 403 body says which; a real denial then costs one extra request.
		if strings.Contains(req.URL.Path, "/manifests/") {
			resp.StatusCode = http.StatusMethodNotAllowed
			resp.Status = "405 Method Not Allowed"
		}
		return resp, nil
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	rest := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), rest), rest}
	if rerr != nil || !bytes.Contains(bytes.ToLower(body), ecrExpired) {
		return resp, nil
	}
	resp.StatusCode = http.StatusUnauthorized
	resp.Status = "401 Unauthorized"
	resp.Header = resp.Header.Clone()
	resp.Header.Set(expiredHeader, "1")
	return resp, nil
}

func transportOf(c *http.Client) http.RoundTripper {
	if c != nil && c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}
