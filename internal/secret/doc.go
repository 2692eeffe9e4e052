// Package secret holds credential material so that it cannot be printed by
// accident. A Secret formats as "[redacted]" under every fmt verb, in JSON,
// in text encodings and as a log/slog value; the only way to the bytes is
// Reveal, which callers use at the one place the registry needs them.
// Hash gives the full-length identity caches key material by (never
// shown); a Fingerprinter gives the short handle people see, an HMAC under
// a key so that shown output cannot be used to test guesses offline.
package secret
