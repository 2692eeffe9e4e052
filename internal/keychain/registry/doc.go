// Package registry turns an image reference into the registry it lives in:
// the canonical host (Docker Hub's three names folded into "docker.io",
// ports kept, case folded) and the registry's kind — ECR in every AWS
// partition, ECR Public, GCR, Artifact Registry, ACR in every Azure cloud,
// GHCR, NGC, Quay, Docker Hub or generic — with the account, region and
// partition a cloud provider needs to mint a token. Host rules are the data
// table in kinds.go; a Mapping from the node config can name the kind of any
// other host (a mirror or a pull-through cache).
package registry
