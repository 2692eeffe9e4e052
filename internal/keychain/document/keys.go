package document

import "sort"

// Type is a credential type, as beta9 names them.
type Type string

const (
	TypePublic Type = "public"
	TypeBasic  Type = "basic"
	TypeAWS    Type = "aws"
	TypeGCP    Type = "gcp"
	TypeAzure  Type = "azure"
	TypeToken  Type = "token"
)

// Types lists the valid types in the order help text shows them.
var Types = []Type{TypePublic, TypeBasic, TypeAWS, TypeGCP, TypeAzure, TypeToken}

// The key vocabulary (beta9's, see docs/design.md).
const (
	KeyUsername          = "USERNAME"
	KeyPassword          = "PASSWORD"
	KeyRegistryUsername  = "REGISTRY_USERNAME"
	KeyRegistryPassword  = "REGISTRY_PASSWORD"
	KeyDockerUsername    = "DOCKER_USERNAME"
	KeyDockerPassword    = "DOCKER_PASSWORD"
	KeyDockerHubUsername = "DOCKERHUB_USERNAME"
	KeyDockerHubPassword = "DOCKERHUB_PASSWORD"
	KeyDockerHubToken    = "DOCKERHUB_TOKEN"
	KeyGitHubUsername    = "GITHUB_USERNAME"
	KeyGitHubToken       = "GITHUB_TOKEN"
	KeyNGCAPIKey         = "NGC_API_KEY"
	KeyAWSAccessKeyID    = "AWS_ACCESS_KEY_ID"
	KeyAWSSecretKey      = "AWS_SECRET_ACCESS_KEY"
	KeyAWSSessionToken   = "AWS_SESSION_TOKEN"
	KeyAWSRegion         = "AWS_REGION"
	KeyAWSRoleARN        = "AWS_ROLE_ARN"
	KeyGCPAccessToken    = "GCP_ACCESS_TOKEN"
	KeyGoogleAppCreds    = "GOOGLE_APPLICATION_CREDENTIALS"
	KeyGCPProjectID      = "GCP_PROJECT_ID"
	KeyAzureClientID     = "AZURE_CLIENT_ID"
	KeyAzureClientSecret = "AZURE_CLIENT_SECRET"
	KeyAzureTenantID     = "AZURE_TENANT_ID"
)

// keyTypes says which types a known key belongs to; a key of a type other
// than the document's is an error ("a key for the wrong type"). Username
// and password keys fit every type that can fall back to basic auth.
var keyTypes = map[string][]Type{
	KeyUsername:          {TypeBasic, TypeToken},
	KeyPassword:          {TypeBasic},
	KeyRegistryUsername:  {TypeBasic},
	KeyRegistryPassword:  {TypeBasic},
	KeyDockerUsername:    {TypeBasic},
	KeyDockerPassword:    {TypeBasic},
	KeyDockerHubUsername: {TypeBasic, TypeToken},
	KeyDockerHubPassword: {TypeBasic},
	KeyDockerHubToken:    {TypeToken},
	KeyGitHubUsername:    {TypeToken, TypeBasic},
	KeyGitHubToken:       {TypeToken},
	KeyNGCAPIKey:         {TypeToken},
	KeyAWSAccessKeyID:    {TypeAWS},
	KeyAWSSecretKey:      {TypeAWS},
	KeyAWSSessionToken:   {TypeAWS},
	KeyAWSRegion:         {TypeAWS},
	KeyAWSRoleARN:        {TypeAWS},
	KeyGCPAccessToken:    {TypeGCP, TypeToken},
	KeyGoogleAppCreds:    {TypeGCP},
	KeyGCPProjectID:      {TypeGCP},
	KeyAzureClientID:     {TypeAzure},
	KeyAzureClientSecret: {TypeAzure},
	KeyAzureTenantID:     {TypeAzure},
}

// TokenKeys are the keys that make a document of type token (beta9's
// tokenCredKeys), in the order a generic registry prefers them.
var TokenKeys = []string{KeyNGCAPIKey, KeyGitHubToken, KeyDockerHubToken}

// AllKeys lists the whole key vocabulary, sorted (tests that must cover
// every key range over it).
func AllKeys() []string {
	out := make([]string, 0, len(keyTypes))
	for k := range keyTypes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// KnownKey reports whether k is in the vocabulary.
func KnownKey(k string) bool { _, ok := keyTypes[k]; return ok }

// Non-secret keys: their values may be shown (region, account-like ids,
// usernames). Everything else is a secret.
var publicKeys = map[string]bool{
	KeyUsername: true, KeyRegistryUsername: true, KeyDockerUsername: true,
	KeyDockerHubUsername: true, KeyGitHubUsername: true, KeyAWSRegion: true,
	KeyAWSRoleARN: true, KeyGCPProjectID: true, KeyAzureClientID: true,
	KeyAzureTenantID: true, KeyAWSAccessKeyID: false,
}

// IsPublicKey reports whether a key's value may be displayed.
func IsPublicKey(k string) bool { return publicKeys[k] }
