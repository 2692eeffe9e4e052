package cloudemu

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkResolve runs resolve b.N times and reports, besides ns/op and
// allocs/op, the median and 99th percentile of single calls (p50-ns,
// p99-ns): a warm resolution's budget is a median.
func BenchmarkResolve(b *testing.B, resolve func() error) {
	b.ReportAllocs()
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := resolve(); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}
}
