package azure

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// maxBody bounds what is read of a token response.
const maxBody = 64 << 10

// aadToken gets an AAD access token for the cloud's ACR audience with the
// client-credentials grant.
func (p *Provider) aadToken(ctx context.Context, c cloud, tenant, clientID string, clientSecret secret.Secret) (string, error) {
	cfg := clientcredentials.Config{
		ClientID:     clientID,
		ClientSecret: clientSecret.Reveal(),
		TokenURL:     c.authority + "/" + url.PathEscape(tenant) + "/oauth2/v2.0/token",
		Scopes:       []string{c.audience + "/.default"},
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	api := "Azure AD token"
	var tok *oauth2.Token
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		t, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, p.hc))
		if err != nil {
			var re *oauth2.RetrieveError
			if errors.As(err, &re) && re.Response != nil {
				s := re.Response.StatusCode
				return s == http.StatusTooManyRequests || s >= 500, retryAfter(re.Response), err
			}
			return false, 0, err
		}
		tok = t
		return false, 0, nil
	})
	if err != nil {
		return "", classifyAAD(ctx, api, n, err)
	}
	return tok.AccessToken, nil
}

// errNoExchange: the registry does not do AAD exchange (404) or refuses
// the request as unsupported (400).
var errNoExchange = errors.New("no AAD exchange")

// exchange trades the AAD token for the registry's refresh token.
func (p *Provider) exchange(ctx context.Context, reg registry.Registry, tenant, aad string) (string, error) {
	api := "ACR " + reg.Host + " /oauth2/exchange"
	form := url.Values{
		"grant_type":   {"access_token"},
		"service":      {reg.Host},
		"tenant":       {tenant},
		"access_token": {aad},
	}.Encode()
	var refresh string
	var status int
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		var body []byte
		var wait time.Duration
		var err error
		status, body, wait, err = p.send(ctx, p.hc, http.MethodPost, "https://"+reg.Host+"/oauth2/exchange", strings.NewReader(form),
			"Content-Type", "application/x-www-form-urlencoded")
		if err != nil {
			return false, 0, err
		}
		if status != http.StatusOK {
			return status == http.StatusTooManyRequests || status >= 500, wait, &acrError{status: status, detail: acrDetail(body)}
		}
		var r struct {
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal(body, &r) != nil || r.RefreshToken == "" {
			return false, 0, fmt.Errorf("the answer has no refresh_token: %w", errdefs.ErrUnknown)
		}
		refresh = r.RefreshToken
		return false, 0, nil
	})
	if err == nil {
		return refresh, nil
	}
	var ae *acrError
	if errors.As(err, &ae) {
		switch {
		case ae.status == http.StatusNotFound || ae.status == http.StatusBadRequest:
			return "", errNoExchange
		case ae.status == http.StatusTooManyRequests:
			return "", fmt.Errorf("%s throttled (%d attempts): %s: %w", api, n, ae, errdefs.ErrUnavailable)
		case ae.status >= 500:
			return "", fmt.Errorf("%s unavailable (%d attempts): %s: %w", api, n, ae, errdefs.ErrUnavailable)
		case ae.status == http.StatusUnauthorized:
			return "", fmt.Errorf("%s refused the AAD token: %s: %w", api, ae, errdefs.ErrUnauthenticated)
		case ae.status == http.StatusForbidden:
			return "", fmt.Errorf("%s: denied: %s: %w", api, ae, errdefs.ErrPermissionDenied)
		}
		return "", fmt.Errorf("%s failed: %s: %w", api, ae, errdefs.ErrUnknown)
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s: no answer in time: %w", api, ctx.Err())
	}
	if errdefs.IsUnknown(err) {
		return "", fmt.Errorf("%s: %w", api, err)
	}
	return "", fmt.Errorf("%s: registry unreachable: %w: %w", api, err, errdefs.ErrUnavailable)
}

// acrError is a non-200 exchange answer; detail is the registry's error
// code and message, never the body as a whole.
type acrError struct {
	status int
	detail string
}

func (e *acrError) Error() string {
	if e.detail == "" {
		return "HTTP " + strconv.Itoa(e.status)
	}
	return "HTTP " + strconv.Itoa(e.status) + " " + e.detail
}

func acrDetail(body []byte) string {
	var r struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &r) != nil || len(r.Errors) == 0 {
		return ""
	}
	return keychain.OneLine(r.Errors[0].Code+": "+r.Errors[0].Message, 200)
}

// refreshExpiry reads exp from the refresh token's JWT claims.
func (p *Provider) refreshExpiry(tok string) time.Time {
	if c := readClaims(tok); c.exp > 0 {
		return time.Unix(c.exp, 0)
	}
	return p.now().Add(DefaultRefreshTokenLife)
}

// claims are what is read, unverified, from a token we were just given
// over TLS by its issuer: the registry or AAD checks it, we only schedule.
type claims struct {
	exp int64
	tid string
}

func readClaims(tok string) claims {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return claims{}
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return claims{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
		Tid string      `json:"tid"`
	}
	if json.Unmarshal(b, &c) != nil {
		return claims{}
	}
	exp, _ := c.Exp.Float64()
	return claims{exp: int64(exp), tid: c.Tid}
}

// send makes one request with header (name, value pairs) and reads at
// most maxBody of the answer; status is 0 when there was none.
func (p *Provider) send(ctx context.Context, hc *http.Client, method, target string, body io.Reader, header ...string) (status int, answer []byte, retryIn time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, nil, 0, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	answer, _ = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	return resp.StatusCode, answer, retryAfter(resp), nil
}

func retryAfter(resp *http.Response) time.Duration {
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		return min(time.Duration(s)*time.Second, 30*time.Second)
	}
	return 0
}

// classifyAAD describes an AAD failure from its status and AADSTS code;
// oauth2's RetrieveError prints the body, so it is not wrapped.
func classifyAAD(ctx context.Context, api string, attempts int, err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no answer in time (%d attempts): %w", api, attempts, ctx.Err())
		}
		return fmt.Errorf("%s: authority unreachable or answered garbage: %s: %w", api, keychain.OneLine(err.Error(), 300), errdefs.ErrUnavailable)
	}
	code := re.Response.StatusCode
	// AAD descriptions end with trace and correlation ids; the first line
	// holds the AADSTS code and its meaning.
	desc := strings.SplitN(re.ErrorDescription, "\n", 2)[0]
	return &keychain.TokenEndpointError{API: api, Attempts: attempts, Status: code, Code: re.ErrorCode, Description: desc,
		Issuer: "Azure AD", Credential: "the service principal"}
}
