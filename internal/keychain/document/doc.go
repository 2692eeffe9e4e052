// Package document parses credential documents: the text a pod annotation
// (b9.beam.cloud/image-credentials[.<name>]), a beta9 ContainerRequest or
// the node config carries. It accepts every form beta9 and CLIP write — the
// {"registry","type","credentials"} envelope, an array of envelopes, a flat
// JSON map of credential keys, and "username:password" — decides the
// credential type in beta9's order when the document does not say, and
// checks that the keys fit the type. Values are held as secret.Secret from
// the moment they are read; every error names the source and the field and
// never the value.
package document
