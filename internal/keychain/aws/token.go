package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/ecrpublic"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// ecrTokenLife is ECR's documented token life, used only if a response
// lacks expiresAt.
const ecrTokenLife = 12 * time.Hour

// authorizationToken calls GetAuthorizationToken and decodes the token.
// No registryIds are sent: the token opens every registry the principal
// may read (the field is deprecated and only picks proxyEndpoint), which is
// why one token is cached per partition and region.
func (p *Provider) authorizationToken(ctx context.Context, t target, creds awssdk.Credentials) (keychain.Minted, error) {
	static := credentials.StaticCredentialsProvider{Value: creds}
	var call func(context.Context) (*string, *time.Time, error)
	api, name := "ECR GetAuthorizationToken", "aws/ecr"
	if t.public {
		api, name = "ECR Public GetAuthorizationToken", "aws/ecr-public"
		o := ecrpublic.Options{Region: t.region, Credentials: static, HTTPClient: p.hc, Retryer: awssdk.NopRetryer{}}
		p.applyEndpoint(&o.BaseEndpoint, &o.EndpointOptions.UseFIPSEndpoint, &o.EndpointOptions.UseDualStackEndpoint, "ECR_PUBLIC", p.endpoints.ECRPublic, t)
		c := ecrpublic.New(o)
		call = func(ctx context.Context) (*string, *time.Time, error) {
			out, err := c.GetAuthorizationToken(ctx, &ecrpublic.GetAuthorizationTokenInput{})
			if err != nil {
				return nil, nil, err
			}
			if out.AuthorizationData == nil {
				return nil, nil, errNoData
			}
			return out.AuthorizationData.AuthorizationToken, out.AuthorizationData.ExpiresAt, nil
		}
	} else {
		o := ecr.Options{Region: t.region, Credentials: static, HTTPClient: p.hc, Retryer: awssdk.NopRetryer{}}
		p.applyEndpoint(&o.BaseEndpoint, &o.EndpointOptions.UseFIPSEndpoint, &o.EndpointOptions.UseDualStackEndpoint, "ECR", p.endpoints.ECR, t)
		c := ecr.New(o)
		call = func(ctx context.Context) (*string, *time.Time, error) {
			out, err := c.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
			if err != nil {
				return nil, nil, err
			}
			if len(out.AuthorizationData) == 0 {
				return nil, nil, errNoData
			}
			return out.AuthorizationData[0].AuthorizationToken, out.AuthorizationData[0].ExpiresAt, nil
		}
	}

	var tok *string
	var exp *time.Time
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		var err error
		tok, exp, err = call(ctx)
		return retryable(err), 0, err
	})
	if err != nil {
		return keychain.Minted{}, classify(api, n, err)
	}
	user, pass, err := decodeToken(tok)
	if err != nil {
		return keychain.Minted{}, fmt.Errorf("%s: %w", api, err)
	}
	expires := time.Now().Add(ecrTokenLife)
	if exp != nil {
		expires = *exp
	}
	return keychain.Minted{Username: user, Secret: secret.New(pass), ExpiresAt: expires, Provider: name}, nil
}

var errNoData = fmt.Errorf("the response has no authorizationData: %w", errdefs.ErrUnknown)

// decodeToken splits base64("AWS:<password>"). Its errors never quote the
// token.
func decodeToken(tok *string) (string, string, error) {
	if tok == nil || *tok == "" {
		return "", "", errors.Join(errors.New("the response has no authorizationToken"), errdefs.ErrUnknown)
	}
	raw, err := base64.StdEncoding.DecodeString(*tok)
	if err != nil {
		return "", "", errors.Join(errors.New("the authorizationToken is not base64"), errdefs.ErrUnknown)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || pass == "" {
		return "", "", errors.Join(errors.New("the authorizationToken is not user:password"), errdefs.ErrUnknown)
	}
	return user, pass, nil
}
