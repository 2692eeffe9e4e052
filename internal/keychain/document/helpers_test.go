package document

import "github.com/beam-cloud/b9-resolver/internal/secret"

type Secret = secret.Secret

func newSecret(s string) secret.Secret { return secret.New(s) }
