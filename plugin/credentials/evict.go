package credentials

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/pkg/credclient/remotehosts"
)

// Bounds of the Store's indexes. A node pulls far fewer distinct
// credentials than these; they only stop a flood of pulls from growing
// memory (and the state file) without end, and keep one tenant's flood
// from pushing out another's records.
const (
	// DefaultMaxRecords bounds each index (refs; host/repository pairs)
	// as a whole.
	DefaultMaxRecords = 4096
	// DefaultMaxRecordsPerSource bounds each credential source's share of
	// an index: a pod namespace, or the node's own credentials. A source
	// over it loses its own oldest records first.
	DefaultMaxRecordsPerSource = 1024
	// hardLimitFactor times MaxRecords is the size no index passes, live
	// refs or not: the last guard of memory when snapshots cannot be
	// listed or everything on them is live.
	hardLimitFactor = 4
	// minLiveInterval is the least time between two listings of the live
	// refs; a flood of pulls lists them once a second at most.
	minLiveInterval = time.Second
	// liveTimeout bounds one listing.
	liveTimeout = 5 * time.Second
)

// LiveRefs lists the credential refs still on a snapshot (the
// CredentialRefLabel of layer snapshots a lazy snapshotter may read from
// at any time). The Store never evicts the record of a live ref.
type LiveRefs func(ctx context.Context) (map[string]struct{}, error)

// SnapshotRefs lists the values of CredentialRefLabel on every snapshot
// (committed or active) of the snapshotters. A snapshotter that is not
// there (NotFound) has no snapshots to list; any other failure is an
// error, since a ref it holds would then look dead.
func SnapshotRefs(ctx context.Context, sns map[string]snapshots.Snapshotter) (map[string]struct{}, error) {
	refs := map[string]struct{}{}
	filter := "labels." + strconv.Quote(remotehosts.CredentialRefLabel)
	for name, sn := range sns {
		err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if ref := info.Labels[remotehosts.CredentialRefLabel]; ref != "" {
				refs[ref] = struct{}{}
			}
			return nil
		}, filter)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("list credential refs on snapshotter %s: %w", name, err)
		}
	}
	return refs, nil
}

// SetLiveRefs makes the Store spare the records of refs f lists. The CRI
// service sets it once containerd is connected; until then (and without
// it) records are evicted by age alone.
func (s *Store) SetLiveRefs(f LiveRefs) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	s.liveRefs = f
	s.live = liveSet{}
}

// liveSet is a listing of live refs and when it was taken: a record made
// after it may be live without the listing knowing, so it is spared too.
type liveSet struct {
	at   time.Time
	refs map[string]struct{}
}

// evictable reports whether r may go: it has no ref on a snapshot (no
// ref, or a ref the listing, taken after r was recorded, does not hold).
func (l liveSet) evictable(r *record) bool {
	if r.ref == "" {
		return true
	}
	_, live := l.refs[r.ref]
	return !live && r.at.Before(l.at)
}

// everythingDead is the listing without a LiveRefs: age alone decides.
var everythingDead = liveSet{at: time.Unix(1<<62, 0)}

// currentLive returns a listing of the live refs no older than
// minLiveInterval, listing them again when needed (without s.mu held). A
// failed listing keeps the last one, so records made since are spared.
func (s *Store) currentLive() liveSet {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.liveRefs == nil {
		return everythingDead
	}
	now := s.now()
	if !s.live.at.IsZero() && now.Sub(s.live.at) < minLiveInterval {
		return s.live
	}
	ctx, cancel := context.WithTimeout(context.Background(), liveTimeout)
	defer cancel()
	refs, err := s.liveRefs(ctx)
	if err != nil {
		logger(ctx).WithError(err).Warn("cannot list the credential refs on snapshots; records made since the last listing are kept")
		return s.live
	}
	s.live = liveSet{at: now, refs: refs}
	return s.live
}

// overLocked reports whether an index holds more than it may, as a whole
// or for source.
func (s *Store) overLocked(source string) bool {
	if len(s.byRef) > s.max || len(s.byRepo) > s.max {
		return true
	}
	return countSource(s.byRef, source) > s.maxPerSource || countSource(s.byRepo, source) > s.maxPerSource
}

// evictLocked brings each index within its bounds: a source over its share
// loses its own oldest evictable records, then the index as a whole its
// oldest evictable ones; past the hard limit the oldest go, live or not.
func (s *Store) evictLocked(live liveSet) bool {
	a := evictIndex(s.byRef, live, s.max, s.maxPerSource)
	b := evictIndex(s.byRepo, live, s.max, s.maxPerSource)
	return a || b
}

func evictIndex[K comparable](m map[K]*record, live liveSet, max, perSource int) bool {
	evicted := false
	counts := map[string]int{}
	for _, r := range m {
		counts[r.source()]++
	}
	for src, n := range counts {
		for ; n > perSource; n-- {
			k, ok := oldest(m, func(r *record) bool { return r.source() == src && live.evictable(r) })
			if !ok {
				break
			}
			delete(m, k)
			evicted = true
		}
	}
	for len(m) > max {
		k, ok := oldest(m, live.evictable)
		if !ok {
			break
		}
		delete(m, k)
		evicted = true
	}
	for len(m) > max*hardLimitFactor {
		k, _ := oldest(m, func(*record) bool { return true })
		delete(m, k)
		evicted = true
	}
	return evicted
}

// oldest finds m's oldest record that ok accepts. A scan per eviction is
// fine: it happens once per pull at most.
func oldest[K comparable](m map[K]*record, ok func(*record) bool) (K, bool) {
	var key K
	var at time.Time
	found := false
	for k, r := range m {
		if ok(r) && (!found || r.at.Before(at)) {
			key, at, found = k, r.at, true
		}
	}
	return key, found
}

func countSource[K comparable](m map[K]*record, source string) int {
	n := 0
	for _, r := range m {
		if r.source() == source {
			n++
		}
	}
	return n
}
