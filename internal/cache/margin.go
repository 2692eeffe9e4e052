package cache

import "time"

// ExpiryMargin is how long before its expiry a credential or token of the
// given life stops being presented: a tenth of its life, at most max, so
// it does not die on the way to the registry (clock skew, a slow request).
// The keychain, the resolver's token cache and credclient's cache all
// retire entries by it.
func ExpiryMargin(life, max time.Duration) time.Duration { return min(life/10, max) }
