package main

import (
	"context"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// credsResult is `ctr-b9 creds -o json`. Fingerprint identifies the source
// credential (stable across re-mints); SecretFingerprint the minted one.
// Both are HMACs under the key FingerprintKey names: "node" (--node-key,
// as the plugin's) or "invocation" (random, this run only).
type credsResult struct {
	Reference         string        `json:"reference"`
	Host              string        `json:"host"`
	Kind              registry.Kind `json:"kind"`
	Account           string        `json:"account,omitempty"`
	Region            string        `json:"region,omitempty"`
	Type              string        `json:"type"`
	Source            string        `json:"source"`
	Provider          string        `json:"provider"`
	Username          string        `json:"username"`
	Anonymous         bool          `json:"anonymous"`
	IdentityToken     bool          `json:"identity_token"`
	Fingerprint       string        `json:"fingerprint"`
	SecretFingerprint string        `json:"secret_fingerprint"`
	FingerprintKey    string        `json:"fingerprint_key"`
	ExpiresAt         string        `json:"expires_at"`
	// Sealed: the document arrived sealed and was opened with --identity.
	Sealed bool `json:"sealed"`
}

func credsCommand() *cli.Command {
	return &cli.Command{
		Name:      "creds",
		Usage:     "explain which credential a pull of REF would use, and why",
		ArgsUsage: "REF",
		Description: `Resolves the credential exactly as the plugin would on PullImage
through the plugin's precedence chain (annotation documents, then --creds
as PullImageRequest.auth, then --node-document and --docker-config as node
credentials, else anonymous),
minting cloud tokens when the document needs it. The secret is shown only as
a fingerprint: an HMAC under the plugin's key with --node-key (comparable
with ctr-b9 cache ls), else under a key made for this run only.

Example:
   ctr-b9 creds --pod-config pod.json 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1
   ctr-b9 creds --document '{"registry":"nvcr.io","credentials":{"NGC_API_KEY":"..."}}' nvcr.io/nvidia/pytorch:24.01-py3
   ctr-b9 creds -o json --annotations ann.json ghcr.io/beam-cloud/beta9`,
		Flags: append(credFlags(), outputFlag()),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ref, src, err := refAndSources(cmd)
			if err != nil {
				return err
			}
			det, err := detectorFromFlags(cmd)
			if err != nil {
				return err
			}
			kc, keyedBy, err := newKeychain(cmd)
			if err != nil {
				return err
			}
			defer kc.Close()
			r, err := src.resolve(ctx, kc, det, ref.Registry)
			if err != nil {
				return err
			}
			res := credsResultFor(ref, r.Cred)
			res.FingerprintKey = keyedBy
			res.Sealed = r.Candidate.Cred == nil && r.Candidate.Doc.Sealed
			return emit(cmd.Root().Writer, cmd.String("output"), res, []field{
				{"reference", res.Reference}, {"host", res.Host}, {"kind", string(res.Kind)},
				{"account", res.Account}, {"region", res.Region}, {"type", res.Type},
				{"source", res.Source}, {"provider", res.Provider}, {"username", res.Username},
				{"anonymous", yesNo(res.Anonymous)}, {"sealed", yesNo(res.Sealed)}, {"fingerprint", res.Fingerprint},
				{"secret fingerprint", res.SecretFingerprint},
				{"fingerprint key", describeFingerprintKey(res.FingerprintKey)},
				{"expires at", res.ExpiresAt},
			})
		},
	}
}

func credsResultFor(ref registry.Reference, c keychain.Credential) credsResult {
	res := credsResult{
		Reference: ref.String(), Host: ref.Registry.Host, Kind: ref.Registry.Kind,
		Account: ref.Registry.Account, Region: ref.Registry.Region,
		Type: string(c.Type), Source: c.Source, Provider: c.Provider, Username: c.Username,
		Anonymous: c.Anonymous, IdentityToken: c.IdentityToken, Fingerprint: c.SourceFingerprint,
		SecretFingerprint: c.SecretFingerprint,
	}
	if res.Type == "" {
		res.Type = "anonymous"
	}
	if !c.ExpiresAt.IsZero() {
		res.ExpiresAt = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return res
}
