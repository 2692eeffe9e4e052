package aws

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

func TestMint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		host     string
		doc      func(testing.TB) document.Document
		setup    func(*cloudemu.AWS)
		api      string
		region   string
		service  string
		session  bool // the ECR call carried a session token
		provider string
		stsCalls int
	}{
		{name: "static keys", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			api: cloudemu.APIECRGetAuthorizationToken, region: "us-west-2", service: "ecr", provider: "aws/ecr"},
		{name: "matching AWS_REGION", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_REGION", "us-west-2") },
			api: cloudemu.APIECRGetAuthorizationToken, region: "us-west-2", service: "ecr", provider: "aws/ecr"},
		{name: "session token", host: ecrHost,
			setup: func(e *cloudemu.AWS) { e.AddSessionUser(sessAKID, sessSecret, sessToken, time.Now().Add(time.Hour)) },
			doc: func(tb testing.TB) document.Document {
				return awsDoc(tb, "AWS_ACCESS_KEY_ID", sessAKID, "AWS_SECRET_ACCESS_KEY", sessSecret, "AWS_SESSION_TOKEN", sessToken)
			},
			api: cloudemu.APIECRGetAuthorizationToken, region: "us-west-2", service: "ecr", session: true, provider: "aws/ecr"},
		{name: "ECR Public goes to us-east-1 whatever AWS_REGION says", host: ecrPublic,
			doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_REGION", "eu-west-1") },
			api: cloudemu.APIECRPublicGetAuthorizationToken, region: "us-east-1", service: "ecr-public", provider: "aws/ecr-public"},
		{name: "assume role", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_ROLE_ARN", roleARN) },
			api: cloudemu.APIECRGetAuthorizationToken, region: "us-west-2", service: "ecr", session: true, provider: "aws/ecr/assume-role", stsCalls: 1},
		{name: "generic host takes AWS_REGION", host: "mirror.example.com", doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_REGION", "eu-central-1") },
			api: cloudemu.APIECRGetAuthorizationToken, region: "eu-central-1", service: "ecr", provider: "aws/ecr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEmu(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			p := newProvider(e)
			before := time.Now()
			m, err := p.Mint(context.Background(), reg(tt.host), tt.doc(t))
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if m.Username != "AWS" || m.Provider != tt.provider || m.IdentityToken || m.Anonymous {
				t.Errorf("minted %+v, want username AWS, provider %s", m, tt.provider)
			}
			if !e.Valid(m.Secret.Reveal(), time.Now()) {
				t.Error("the emulator does not know the minted password")
			}
			if want := e.ExpiresAt(m.Secret.Reveal()); !m.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt %v, want the emulator's %v", m.ExpiresAt, want)
			}
			if d := m.ExpiresAt.Sub(before); d < emulatorLife-time.Minute || d > emulatorLife+time.Minute {
				t.Errorf("token life %v, want ~%v", d, emulatorLife)
			}
			if got := e.Calls(cloudemu.APISTSAssumeRole); got != tt.stsCalls {
				t.Errorf("STS calls %d, want %d", got, tt.stsCalls)
			}
			reqs := e.Requests()
			last := reqs[len(reqs)-1]
			if last.API != tt.api || last.Region != tt.region || last.Service != tt.service || last.SessionToken != tt.session {
				t.Errorf("token request %+v, want api %s region %s service %s session %v", last, tt.api, tt.region, tt.service, tt.session)
			}
			if len(last.RegistryIDs) != 0 {
				t.Errorf("sent registryIds %v; the token is principal-wide", last.RegistryIDs)
			}
			if tt.stsCalls > 0 {
				if reqs[0].API != cloudemu.APISTSAssumeRole || reqs[0].RoleARN != roleARN || reqs[0].AccessKeyID != tenantAKID {
					t.Errorf("STS request %+v, want AssumeRole of %s with the tenant key", reqs[0], roleARN)
				}
				if last.AccessKeyID == tenantAKID || !strings.HasPrefix(last.AccessKeyID, "ASIA") {
					t.Errorf("ECR was called with %s, want the assumed session's key", last.AccessKeyID)
				}
			}
		})
	}
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		host  string
		doc   func(testing.TB) document.Document
		setup func(*cloudemu.AWS)
		opts  []Option
		class func(error) bool
		want  string
		// ecrCalls is how many ECR calls the emulator should see.
		ecrCalls int
	}{
		{name: "unknown access key", host: ecrHost,
			doc: func(tb testing.TB) document.Document {
				return awsDoc(tb, "AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY", "CANARY-x")
			},
			class: errdefs.IsUnauthorized, want: "does not recognise the access key", ecrCalls: 1},
		{name: "wrong secret key", host: ecrHost,
			doc: func(tb testing.TB) document.Document {
				return awsDoc(tb, "AWS_ACCESS_KEY_ID", tenantAKID, "AWS_SECRET_ACCESS_KEY", "CANARY-wrong")
			},
			class: errdefs.IsUnauthorized, want: "secret access key does not match", ecrCalls: 1},
		{name: "expired session token", host: ecrHost,
			setup: func(e *cloudemu.AWS) { e.AddSessionUser(sessAKID, sessSecret, sessToken, time.Now().Add(-time.Minute)) },
			doc: func(tb testing.TB) document.Document {
				return awsDoc(tb, "AWS_ACCESS_KEY_ID", sessAKID, "AWS_SECRET_ACCESS_KEY", sessSecret, "AWS_SESSION_TOKEN", sessToken)
			},
			class: errdefs.IsUnauthorized, want: "credentials have expired", ecrCalls: 1},
		{name: "wrong session token", host: ecrHost,
			setup: func(e *cloudemu.AWS) { e.AddSessionUser(sessAKID, sessSecret, sessToken, time.Now().Add(time.Hour)) },
			doc: func(tb testing.TB) document.Document {
				return awsDoc(tb, "AWS_ACCESS_KEY_ID", sessAKID, "AWS_SECRET_ACCESS_KEY", sessSecret, "AWS_SESSION_TOKEN", "CANARY-other-session")
			},
			class: errdefs.IsUnauthorized, want: "does not recognise", ecrCalls: 1},
		{name: "access denied", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			setup: func(e *cloudemu.AWS) { e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.Deny, -1) },
			class: errdefs.IsPermissionDenied, want: "ECR GetAuthorizationToken: access denied", ecrCalls: 1},
		{name: "AWS_REGION differs from the host's", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_REGION", "us-east-1") },
			class: errdefs.IsInvalidArgument, want: `field credentials.AWS_REGION: does not match the region us-west-2`},
		{name: "no region for a generic host", host: "mirror.example.com", doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			class: errdefs.IsInvalidArgument, want: "credentials.AWS_REGION: missing"},
		{name: "malformed AWS_REGION", host: "mirror.example.com", doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_REGION", "us west 2/..") },
			class: errdefs.IsInvalidArgument, want: "not an AWS region name"},
		{name: "not an AWS registry", host: "ghcr.io", doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			class: errdefs.IsInvalidArgument, want: "type aws cannot make credentials for ghcr.io"},
		{name: "no keys and ambient disabled", host: ecrHost, doc: func(tb testing.TB) document.Document { return awsDoc(tb) },
			class: errdefs.IsInvalidArgument, want: "credentials.AWS_ACCESS_KEY_ID: missing"},
		{name: "malformed role ARN", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_ROLE_ARN", "puller") },
			class: errdefs.IsInvalidArgument, want: "credentials.AWS_ROLE_ARN: not a role ARN"},
		{name: "role not assumable", host: ecrHost,
			doc: func(tb testing.TB) document.Document {
				return staticDoc(tb, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/other")
			},
			class: errdefs.IsPermissionDenied, want: "STS AssumeRole: access denied"},
		{name: "ECR throttles every attempt", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			setup: func(e *cloudemu.AWS) { e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.Throttle, -1) },
			class: errdefs.IsUnavailable, want: "ECR GetAuthorizationToken throttled (3 attempts)", ecrCalls: 3},
		{name: "ECR Public throttles every attempt", host: ecrPublic, doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			setup: func(e *cloudemu.AWS) { e.Fail(cloudemu.APIECRPublicGetAuthorizationToken, cloudemu.Throttle, -1) },
			class: errdefs.IsUnavailable, want: "ECR Public GetAuthorizationToken throttled (3 attempts)"},
		{name: "STS throttles every attempt", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb, "AWS_ROLE_ARN", roleARN) },
			setup: func(e *cloudemu.AWS) { e.Fail(cloudemu.APISTSAssumeRole, cloudemu.Throttle, -1) },
			class: errdefs.IsUnavailable, want: "STS AssumeRole throttled (3 attempts)"},
		{name: "ECR answers 503", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			setup: func(e *cloudemu.AWS) { e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.Unavailable, -1) },
			class: errdefs.IsUnavailable, want: "ECR GetAuthorizationToken unavailable (3 attempts)", ecrCalls: 3},
		{name: "endpoint down", host: ecrHost, doc: func(tb testing.TB) document.Document { return staticDoc(tb) },
			opts:  []Option{WithEndpoints(Endpoints{ECR: "http://127.0.0.1:1"})},
			class: errdefs.IsUnavailable, want: "ECR GetAuthorizationToken endpoint unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEmu(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			p := newProvider(e, tt.opts...)
			start := time.Now()
			_, err := p.Mint(context.Background(), reg(tt.host), tt.doc(t))
			if err == nil {
				t.Fatal("Mint succeeded")
			}
			if !tt.class(err) {
				t.Errorf("error %q has the wrong errdefs class", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if got := e.Calls(cloudemu.APIECRGetAuthorizationToken); got != tt.ecrCalls {
				t.Errorf("ECR calls %d, want %d", got, tt.ecrCalls)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			cloudemu.AssertNoSecrets(t, "error", []string{err.Error(), strings.ToLower(err.Error())})
		})
	}
}

func TestThrottleRecovers(t *testing.T) {
	t.Parallel()
	e := newEmu(t)
	e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.Throttle, 2)
	m, err := newProvider(e).Mint(context.Background(), reg(ecrHost), staticDoc(t))
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	if !e.Valid(m.Secret.Reveal(), time.Now()) {
		t.Error("minted token is not valid")
	}
	if got := e.Calls(cloudemu.APIECRGetAuthorizationToken); got != 3 {
		t.Errorf("ECR calls %d, want 3 (two throttled, one answered)", got)
	}
}

// A throttled call backs off with the default policy but gives up, naming
// the API, before the caller's deadline rather than running into it.
func TestThrottleWithinDeadline(t *testing.T) {
	t.Parallel()
	e := newEmu(t)
	e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.Throttle, -1)
	p := newProvider(e, WithRetry(DefaultRetryForTest()))
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Mint(ctx, reg(ecrHost), staticDoc(t))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "ECR GetAuthorizationToken throttled") || !errdefs.IsUnavailable(err) {
		t.Fatalf("error %v, want an Unavailable ECR throttling error", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || took >= 700*time.Millisecond {
		t.Errorf("gave up after %v with %v; want before the 700ms deadline", took, err)
	}
	if n := e.Calls(cloudemu.APIECRGetAuthorizationToken); n < 2 {
		t.Errorf("ECR calls %d, want at least one retry", n)
	}
}

// The SDK resolves the FIPS, dual-stack and partition endpoints from the
// host; the Redirect transport shows which host each call was signed for.
func TestEndpointResolution(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host, ecrAPI, stsAPI string
	}{
		{ecrHost, "api.ecr.us-west-2.amazonaws.com", "sts.us-west-2.amazonaws.com"},
		{"123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", "api.ecr-fips.us-east-1.amazonaws.com", "sts-fips.us-east-1.amazonaws.com"},
		{"123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "api.ecr-fips.us-gov-west-1.amazonaws.com", "sts.us-gov-west-1.amazonaws.com"},
		{"123456789012.dkr-ecr.us-west-2.on.aws", "ecr.us-west-2.api.aws", "sts.us-west-2.api.aws"},
		{"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "api.ecr.cn-north-1.amazonaws.com.cn", "sts.cn-north-1.amazonaws.com.cn"},
		{"123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu", "api.ecr.eusc-de-east-1.amazonaws.eu", "sts.eusc-de-east-1.amazonaws.eu"},
		{ecrPublic, "api.ecr-public.us-east-1.amazonaws.com", "sts.us-east-1.amazonaws.com"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			e := newEmu(t)
			p, err := New(WithHTTPClient(&http.Client{Transport: cloudemu.Redirect(e.URL, nil)}),
				WithGetenv(func(string) string { return "" }), WithRetry(fastRetry))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Mint(context.Background(), reg(tt.host), staticDoc(t, "AWS_ROLE_ARN", roleARN)); err != nil {
				t.Fatalf("Mint: %v", err)
			}
			reqs := e.Requests()
			if len(reqs) != 2 || reqs[0].Host != tt.stsAPI || reqs[1].Host != tt.ecrAPI {
				t.Errorf("requests went to %+v, want STS %s then ECR %s", reqs, tt.stsAPI, tt.ecrAPI)
			}
		})
	}
}

// The SDK's standard variables pick the endpoint, per service first; an
// override on a FIPS host is used as is (the SDK refuses FIPS with one).
func TestEndpointEnvironment(t *testing.T) {
	t.Parallel()
	const dead = "http://127.0.0.1:1"
	tests := []struct {
		name string
		host string
		env  map[string]string
		ok   bool
	}{
		{"AWS_ENDPOINT_URL", ecrHost, map[string]string{"AWS_ENDPOINT_URL": "EMU"}, true},
		{"AWS_ENDPOINT_URL_ECR wins", ecrHost, map[string]string{"AWS_ENDPOINT_URL": dead, "AWS_ENDPOINT_URL_ECR": "EMU"}, true},
		{"AWS_ENDPOINT_URL_ECR_PUBLIC", ecrPublic, map[string]string{"AWS_ENDPOINT_URL_ECR": dead, "AWS_ENDPOINT_URL_ECR_PUBLIC": "EMU"}, true},
		{"override on a FIPS host", "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", map[string]string{"AWS_ENDPOINT_URL_ECR": "EMU"}, true},
		{"ignored when told to", ecrHost, map[string]string{"AWS_ENDPOINT_URL_ECR": "EMU", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEmu(t)
			env := func(k string) string {
				if v := tt.env[k]; v == "EMU" {
					return e.URL
				} else {
					return v
				}
			}
			// The fallback transport fails anything not sent to an override,
			// so "ignored" cannot reach the emulator by accident.
			hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if "http://"+r.URL.Host != e.URL {
					return nil, errors.New("not the emulator")
				}
				return http.DefaultTransport.RoundTrip(r)
			})}
			p, err := New(WithGetenv(env), WithHTTPClient(hc), WithRetry(fastRetry))
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Mint(context.Background(), reg(tt.host), staticDoc(t))
			if (err == nil) != tt.ok {
				t.Fatalf("Mint error %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCacheScope(t *testing.T) {
	t.Parallel()
	p, _ := New()
	s := p.(interface {
		CacheScope(registry.Registry, document.Document) string
	})
	doc := staticDoc(t)
	tests := []struct {
		a, b string
		same bool
	}{
		{ecrHost, ecrHost2, true},
		{ecrHost, ecrHostEast, false},
		{ecrHost, "123456789012.dkr-ecr.us-west-2.on.aws", true},
		{ecrHost, "123456789012.dkr.ecr-fips.us-west-2.amazonaws.com", false},
		{ecrPublic, "ecr-public.aws.com", true},
		{ecrPublic, ecrHostEast, false},
		{"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "123456789012.dkr.ecr.cn-north-1.on.amazonwebservices.com.cn", true},
	}
	for _, tt := range tests {
		a, b := s.CacheScope(reg(tt.a), doc), s.CacheScope(reg(tt.b), doc)
		if (a == b) != tt.same {
			t.Errorf("scope(%s)=%q scope(%s)=%q, want same=%v", tt.a, a, tt.b, b, tt.same)
		}
	}
}

func TestSessionCacheBounded(t *testing.T) {
	t.Parallel()
	e := newEmu(t)
	p := newProvider(e, WithMaxSessions(2))
	for i, role := range []string{roleARN, roleARN + "2", roleARN + "3"} {
		e.AddRole(role)
		if _, err := p.Mint(context.Background(), reg(ecrHost), staticDoc(t, "AWS_ROLE_ARN", role)); err != nil {
			t.Fatalf("Mint %d: %v", i, err)
		}
	}
	if n := p.sessions.len(); n != 2 {
		t.Errorf("%d sessions cached, want the bound 2", n)
	}
}

// DefaultRetryForTest is the production policy; named so the test says it.
func DefaultRetryForTest() keychain.RetryPolicy { return defaults().retry }

// Options given a value they cannot use refuse it, naming the option,
// rather than keep the default silently.
func TestBadOptionsAreErrors(t *testing.T) {
	for name, o := range map[string]Option{
		"aws.WithHTTPClient":      WithHTTPClient(nil),
		"aws.WithGetenv":          WithGetenv(nil),
		"aws.WithRoleSessionName": WithRoleSessionName(""),
		"aws.WithRoleDuration":    WithRoleDuration(0),
		"aws.WithMaxSessions":     WithMaxSessions(-1),
	} {
		if _, err := New(o); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want InvalidArgument naming it", name, err)
		}
	}
}
