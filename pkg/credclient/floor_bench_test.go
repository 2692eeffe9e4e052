package credclient_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The benchmarks here carry no b9 code at all. They are the floors the
// Credentials service's round trip is judged against on a given machine:
// grpc-go's own health service, and containerd's leaner ttrpc, each
// answering from a child process over a unix socket, as the plugin answers
// CLIP. BenchmarkUnixSocketPingPongBaseline is the floor under both.

// TestServeFloorForBenchmark is the server half of the floor benchmarks:
// B9_BENCH_FLOOR=grpc or =ttrpc picks the transport.
func TestServeFloorForBenchmark(t *testing.T) {
	transport := os.Getenv("B9_BENCH_FLOOR")
	if transport == "" {
		t.Skip("server half of BenchmarkGRPCHealthFloor and BenchmarkTTRPCFloor")
	}
	addr := filepath.Join(t.TempDir(), "floor.sock")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	switch transport {
	case "grpc":
		g := grpc.NewServer(grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(1<<20))
		healthpb.RegisterHealthServer(g, health.NewServer())
		go func() { _ = g.Serve(l) }()
		defer g.Stop()
	case "ttrpc":
		s, err := ttrpc.NewServer()
		if err != nil {
			t.Fatal(err)
		}
		s.RegisterService("grpc.health.v1.Health", &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Check": func(_ context.Context, unmarshal func(any) error) (any, error) {
				var req healthpb.HealthCheckRequest
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
			},
		}})
		go func() { _ = s.Serve(context.Background(), l) }()
		defer s.Close()
	default:
		t.Fatalf("B9_BENCH_FLOOR=%q: want grpc or ttrpc", transport)
	}
	fmt.Printf("ADDR %s\n", addr)
	_, _ = io.Copy(io.Discard, os.Stdin) // serve until the parent closes stdin
}

// BenchmarkGRPCHealthFloor is grpc-go's health Check across processes,
// with the same fixed flow-control window as the Credentials service.
func BenchmarkGRPCHealthFloor(b *testing.B) {
	addr := startChild(b, "^TestServeFloorForBenchmark$", "B9_BENCH_FLOOR=grpc")
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	call := func() {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	for range 1000 {
		call()
	}
	b.ReportAllocs()
	measure(b, call)
}

// BenchmarkTTRPCFloor is the same Check over ttrpc, containerd's
// transport for shims: no HTTP/2, fewer goroutine hand-offs per call.
func BenchmarkTTRPCFloor(b *testing.B) {
	addr := startChild(b, "^TestServeFloorForBenchmark$", "B9_BENCH_FLOOR=ttrpc")
	nc, err := net.Dial("unix", addr)
	if err != nil {
		b.Fatal(err)
	}
	tc := ttrpc.NewClient(nc)
	defer tc.Close()
	ctx := context.Background()
	call := func() {
		var resp healthpb.HealthCheckResponse
		if err := tc.Call(ctx, "grpc.health.v1.Health", "Check", &healthpb.HealthCheckRequest{}, &resp); err != nil {
			b.Fatal(err)
		}
	}
	for range 1000 {
		call()
	}
	b.ReportAllocs()
	measure(b, call)
}
