// Package secret holds credential material so that it cannot be printed by
// accident. A Secret formats as "[redacted]" under every fmt verb, in JSON,
// in text encodings and as a log/slog value; the only way to the bytes is
// Reveal, which callers use at the one place the registry needs them.
// Fingerprint gives a short, stable sha256 handle that is safe to display
// and to use in cache keys.
package secret
