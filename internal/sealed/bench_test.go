package sealed

import (
	"slices"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// BenchmarkSealedAnnotation is the pull-path cost of a sealed annotation:
// the annotation map in, parsed documents out. warm is every pull after
// the first with the same value (identity files stat'ed, the value's
// sha256 looked up, namespace and expiry checked, the document parsed);
// the target is ≤ 50 µs p50. cold is the first: the age decryption
// itself (one X25519 agreement per identity tried).
func BenchmarkSealedAnnotation(b *testing.B) {
	id := identity(b)
	doc := `{"registry":"registry.example.com:5000","type":"basic","credentials":{"USERNAME":"u","PASSWORD":"p"}}`
	value := seal(b, doc, "team-a", time.Now().Add(time.Hour), identity(b), id)
	ann := map[string]string{"b9.beam.cloud/image-credentials": value}
	b.Run("warm", func(b *testing.B) {
		k := keyringFor(b, id)
		measure(b, func() {
			if _, err := document.FromAnnotations(ann, "", "registry.example.com:5000", document.WithUnsealer(k, "team-a")); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("cold", func(b *testing.B) {
		ids := []age.Identity{id}
		measure(b, func() {
			if _, err := Open("annotation k", value, ids); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("plain", func(b *testing.B) {
		plain := map[string]string{"b9.beam.cloud/image-credentials": doc}
		measure(b, func() {
			if _, err := document.FromAnnotations(plain, "", "registry.example.com:5000"); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// measure runs fn b.N times and reports its p50 and p99 besides ns/op.
func measure(b *testing.B, fn func()) {
	fn()
	b.ReportAllocs()
	samples := make([]time.Duration, 0, 1<<16)
	for b.Loop() {
		start := time.Now()
		fn()
		if len(samples) < cap(samples) {
			samples = append(samples, time.Since(start))
		}
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
}
