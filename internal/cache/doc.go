// Package cache is b9-resolver's one cache primitive: a bounded LRU whose
// entries expire, with a single-flight Get that runs one fetch per missing
// key for every concurrent caller, and the expiry-margin rule every cache
// of a credential or token retires entries by. It imports nothing of
// b9-resolver's and nothing outside the standard library, so public
// packages may use it.
package cache
