// Package sealedfile keeps one small state file encrypted on disk:
// AES-256-GCM under a key the caller derives from the node key, with a
// magic line that names the format and is the GCM additional data (a file
// of another format or version is refused before anything is parsed),
// replaced atomically (temp file, fsync, rename) so a crash leaves the old
// contents or the new, never half of one. The whole contents are sealed,
// not just the secrets in them: which registries and images a node used is
// not for anyone without the key either.
package sealedfile
