package service

import "github.com/beam-cloud/b9-resolver/internal/cache"

// newPullFlights makes concurrent pulls of one image (with the same
// credentials and snapshotter) share one pull, as kubelet starting many
// pods of one image at once would otherwise fetch it many times. The
// shared pull runs on its own context: one impatient caller does not fail
// the others, and it is cancelled only once every caller waiting for it
// has gone.
func newPullFlights[T any]() *cache.Group[string, T] {
	return &cache.Group[string, T]{CancelOrphans: true}
}
