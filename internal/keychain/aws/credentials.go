package aws

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// source is the principal a document stands for, before any role.
type source struct {
	creds awssdk.CredentialsProvider
	// id identifies the principal for the session cache: a hash of the
	// keys, or "ambient".
	id      string
	ambient bool
}

// sessionKey names an assumed-role session: the source identity, the
// role, and the kind of STS endpoint the session's client calls. A
// session's credentials serve every region of its partition, but a FIPS
// (or dual-stack) registry must not reuse one obtained from a standard
// STS endpoint.
func sessionKey(sourceID, role string, t target) string {
	return hashParts(sourceID, role, t.partition, fmt.Sprint(t.fips), fmt.Sprint(t.dualstack))
}

// sourceFor builds the document's credentials without the SDK's config
// loader: static keys must never be mixed with (or replaced by) the node's
// environment, shared files or IMDS.
func (p *Provider) sourceFor(ctx context.Context, doc document.Document) (source, error) {
	if doc.Has(document.KeyAWSAccessKeyID) {
		akid := doc.Get(document.KeyAWSAccessKeyID).Reveal()
		sk := doc.Get(document.KeyAWSSecretKey).Reveal()
		st := doc.Get(document.KeyAWSSessionToken).Reveal()
		return source{
			creds: credentials.NewStaticCredentialsProvider(akid, sk, st),
			id:    hashParts("static", akid, sk, st),
		}, nil
	}
	// The node's identity is a node credential source only: a pod's
	// document (an annotation, PullImageRequest.auth) never reaches it,
	// whatever the node enables.
	if !doc.Node {
		return source{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAWSAccessKeyID,
			Reason: "missing; a pod's aws document needs keys (the node's own AWS identity is only for node credentials)"}
	}
	if !p.ambient {
		return source{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAWSAccessKeyID,
			Reason: "missing; this node does not lend its own AWS identity to documents without keys (cloud.ambient)"}
	}
	creds, err := p.ambientCredentials(ctx)
	if err != nil {
		return source{}, err
	}
	return source{creds: creds, id: "ambient", ambient: true}, nil
}

// ambientCredentials loads the SDK's default chain once; its credentials
// cache then refreshes the node identity by itself.
func (p *Provider) ambientCredentials(ctx context.Context) (awssdk.CredentialsProvider, error) {
	p.ambientMu.Lock()
	defer p.ambientMu.Unlock()
	if p.ambientCreds != nil {
		return p.ambientCreds, nil
	}
	// The node's own configuration keeps the SDK's HTTP client: it is the
	// one that honours the node's AWS_CA_BUNDLE for IMDS and STS.
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRetryer(func() awssdk.Retryer { return awssdk.NopRetryer{} }))
	if err != nil {
		return nil, fmt.Errorf("loading the node's AWS configuration: %w: %w", err, errdefs.ErrUnavailable)
	}
	if cfg.Credentials == nil {
		return nil, fmt.Errorf("the node has no AWS identity: %w", errdefs.ErrUnauthenticated)
	}
	p.ambientCreds = cfg.Credentials
	return p.ambientCreds, nil
}

// credentialsFor returns the credentials to call ECR with: the source's,
// or an assumed role's from the session cache.
func (p *Provider) credentialsFor(ctx context.Context, t target, doc document.Document) (awssdk.Credentials, string, error) {
	src, err := p.sourceFor(ctx, doc)
	if err != nil {
		return awssdk.Credentials{}, "", err
	}
	how := ""
	if src.ambient {
		how = "/ambient"
	}
	prov, api := src.creds, "AWS credentials"
	if doc.Has(document.KeyAWSRoleARN) {
		role := strings.TrimSpace(doc.Get(document.KeyAWSRoleARN).Reveal())
		if !strings.HasPrefix(role, "arn:") {
			return awssdk.Credentials{}, "", &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAWSRoleARN,
				Reason: "not a role ARN (want arn:<partition>:iam::<account>:role/<name>)"}
		}
		prov = p.sessions.get(sessionKey(src.id, role, t), func() awssdk.CredentialsProvider {
			return p.assumeRole(src.creds, role, t)
		})
		api, how = "STS AssumeRole", how+"/assume-role"
	}
	var creds awssdk.Credentials
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		c, err := prov.Retrieve(ctx)
		if err != nil {
			return retryable(err), 0, err
		}
		creds = c
		return false, 0, nil
	})
	if err != nil {
		return awssdk.Credentials{}, "", classify(api, n, err)
	}
	return creds, how, nil
}

// assumeRole makes a cached AssumeRole provider. Its STS client is built
// here, like the ECR ones, from nothing but what the document and the
// provider's options say.
func (p *Provider) assumeRole(src awssdk.CredentialsProvider, role string, t target) awssdk.CredentialsProvider {
	o := sts.Options{
		Region:      t.region,
		Credentials: src,
		HTTPClient:  p.hc,
		Retryer:     awssdk.NopRetryer{},
	}
	p.applyEndpoint(&o.BaseEndpoint, &o.EndpointOptions.UseFIPSEndpoint, &o.EndpointOptions.UseDualStackEndpoint, "STS", p.endpoints.STS, t)
	client := sts.New(o)
	ar := stscreds.NewAssumeRoleProvider(client, role, func(ao *stscreds.AssumeRoleOptions) {
		ao.RoleSessionName = p.sessionName
		ao.Duration = p.roleDuration
	})
	// Refresh a session a few minutes before it ends, jittered, so ECR
	// tokens are never minted with credentials about to lapse.
	return awssdk.NewCredentialsCache(ar, func(co *awssdk.CredentialsCacheOptions) {
		co.ExpiryWindow = 5 * time.Minute
		co.ExpiryWindowJitterFrac = 0.5
	})
}

// session is a cached assumed-role credentials cache.
type session struct {
	creds awssdk.CredentialsProvider
	used  time.Time
}

// sessionCache holds assumed-role sessions keyed by source principal,
// role and partition, bounded, least recently used evicted first.
type sessionCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*session
}

func (c *sessionCache) get(key string, mk func() awssdk.CredentialsProvider) awssdk.CredentialsProvider {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if s := c.m[key]; s != nil {
		s.used = now
		return s.creds
	}
	if len(c.m) >= c.max {
		var oldest string
		for k, s := range c.m {
			if oldest == "" || s.used.Before(c.m[oldest].used) {
				oldest = k
			}
		}
		delete(c.m, oldest)
	}
	s := &session{creds: mk(), used: now}
	c.m[key] = s
	return s.creds
}

func (c *sessionCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

func (c *sessionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// hashParts is a full sha256 over length-prefixed parts: cache keys that
// separate tenants must not collide, so no truncated fingerprint here.
func hashParts(parts ...string) string {
	h := sha256.New()
	for _, s := range parts {
		fmt.Fprintf(h, "%d:", len(s))
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}
