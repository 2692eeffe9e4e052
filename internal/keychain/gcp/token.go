package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"cloud.google.com/go/compute/metadata"
	"github.com/containerd/errdefs"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// serviceAccount trades the key for an access token at its token_uri.
func (p *Provider) serviceAccount(ctx context.Context, doc document.Document) (keychain.Minted, error) {
	data, err := p.keyJSON(doc)
	if err != nil {
		return keychain.Minted{}, err
	}
	cfg, err := google.JWTConfigFromJSON(data, p.scopes...)
	if err != nil {
		// checkKey has vetted the key; say nothing of its content.
		return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyGoogleAppCreds,
			Reason: "not a usable service-account key"}
	}
	host := "token endpoint"
	if u, err := url.Parse(cfg.TokenURL); err == nil {
		host = "token endpoint " + u.Host
	}
	api := "Google " + host
	var tok *oauth2.Token
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		// x/oauth2's JWT source posts without a context; bind one to the
		// transport so the caller's deadline reaches the request.
		hc := &http.Client{Transport: ctxTransport{ctx: ctx, base: transport(p.hc)}, Timeout: p.hc.Timeout}
		t, err := cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, hc)).Token()
		if err != nil {
			return retryableOAuth(err), 0, err
		}
		if err := p.checkLife(t.Expiry); err != nil {
			return true, 0, err
		}
		tok = t
		return false, 0, nil
	})
	if err != nil {
		return keychain.Minted{}, classifyOAuth(ctx, api, n, err)
	}
	return keychain.Minted{Username: Username, Secret: secret.New(tok.AccessToken), ExpiresAt: p.expiry(tok.Expiry), Provider: "gcp/service-account"}, nil
}

// metadataToken asks the metadata server for the node's default service
// account token. A token too close to expiry is waited out: the server
// keeps handing out the same one until it lapses.
func (p *Provider) metadataToken(ctx context.Context) (keychain.Minted, error) {
	const api = "GCE metadata token"
	c := metadata.NewWithOptions(&metadata.Options{Client: p.metadataHC})
	var tok string
	var exp time.Time
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		body, err := c.GetWithContext(ctx, "instance/service-accounts/default/token")
		if err != nil {
			// The metadata client already retried throttling and 5xx.
			return false, 0, err
		}
		var r struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int64  `json:"expires_in"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.AccessToken == "" {
			return false, 0, fmt.Errorf("%s: the answer is not a token: %w", api, errdefs.ErrUnknown)
		}
		e := time.Time{}
		if r.ExpiresIn > 0 {
			e = p.now().Add(time.Duration(r.ExpiresIn) * time.Second)
		}
		if err := p.checkLife(e); err != nil {
			return true, time.Until(e) + 100*time.Millisecond, err
		}
		tok, exp = r.AccessToken, e
		return false, 0, nil
	})
	if err != nil {
		return keychain.Minted{}, classifyMetadata(ctx, api, n, err)
	}
	return keychain.Minted{Username: Username, Secret: secret.New(tok), ExpiresAt: p.expiry(exp), Provider: "gcp/metadata"}, nil
}

var errShortLived = errors.New("token expires too soon")

func (p *Provider) checkLife(exp time.Time) error {
	if !exp.IsZero() && exp.Sub(p.now()) <= p.minLife {
		return fmt.Errorf("%w (in %v, want more than %v): %w", errShortLived, exp.Sub(p.now()).Round(time.Second), p.minLife, errdefs.ErrUnavailable)
	}
	return nil
}

// expiry fills in Google's default life when a response omitted it.
func (p *Provider) expiry(exp time.Time) time.Time {
	if exp.IsZero() {
		return p.now().Add(DefaultAccessTokenLife)
	}
	return exp
}

type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(r.WithContext(t.ctx))
}

func transport(hc *http.Client) http.RoundTripper {
	if hc.Transport != nil {
		return hc.Transport
	}
	return http.DefaultTransport
}

func retryableOAuth(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode == http.StatusTooManyRequests || re.Response.StatusCode >= 500
	}
	return false
}

// classifyOAuth describes a token endpoint failure. oauth2's
// RetrieveError prints the response body, so it is summarised (status,
// error code, description) rather than wrapped.
func classifyOAuth(ctx context.Context, api string, attempts int, err error) error {
	if errors.Is(err, errShortLived) {
		return fmt.Errorf("%s: %w", api, err)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no answer in time (%d attempts): %w", api, attempts, ctx.Err())
		}
		return fmt.Errorf("%s unreachable or answered garbage: %s: %w", api, err, errdefs.ErrUnavailable)
	}
	code := re.Response.StatusCode
	ecode, desc := re.ErrorCode, re.ErrorDescription
	if ecode == "" {
		// The JWT flow leaves the body unparsed; read only RFC 6749's two
		// fields from it.
		var b struct {
			Error            string `json:"error"`
			ErrorDescription string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &b) == nil {
			ecode, desc = b.Error, b.ErrorDescription
		}
	}
	return &keychain.TokenEndpointError{API: api, Attempts: attempts, Status: code, Code: ecode, Description: desc,
		Issuer: "Google", Credential: "the service-account key"}
}

func classifyMetadata(ctx context.Context, api string, attempts int, err error) error {
	if errors.Is(err, errShortLived) || errdefs.IsUnknown(err) {
		return fmt.Errorf("%s: %w", api, err)
	}
	var me *metadata.Error
	var nd metadata.NotDefinedError
	switch {
	case errors.As(err, &nd):
		return fmt.Errorf("%s: the instance has no default service account: %w", api, errdefs.ErrUnauthenticated)
	case errors.As(err, &me) && me.Code == http.StatusTooManyRequests:
		return fmt.Errorf("%s throttled: HTTP 429: %w", api, errdefs.ErrUnavailable)
	case errors.As(err, &me) && me.Code >= 500:
		return fmt.Errorf("%s unavailable: HTTP %d: %w", api, me.Code, errdefs.ErrUnavailable)
	case errors.As(err, &me) && me.Code == http.StatusForbidden:
		return fmt.Errorf("%s: denied: %s: %w", api, keychain.OneLine(me.Message, 200), errdefs.ErrPermissionDenied)
	case errors.As(err, &me):
		return fmt.Errorf("%s failed: HTTP %d: %w", api, me.Code, errdefs.ErrUnknown)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: no answer in time: %w", api, ctx.Err())
	}
	return fmt.Errorf("%s: metadata server unreachable: %w: %w", api, err, errdefs.ErrUnavailable)
}
