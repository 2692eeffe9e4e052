package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	criapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// BenchmarkE2E is `make bench-e2e`: full CRI pulls through b9 side by side
// with stock containerd CRI (`crictl pull --creds`: PullImageRequest.auth)
// in the same containerd-b9, against the same registries, in one run. It
// prints one table: median and p90 wall time per path, the ratio to stock,
// and the registry requests and token calls per pull. Run it alone, as
// root: `go test -run '^$' -bench '^BenchmarkE2E$' -benchtime 1x ./integration`.
//
// Each pair of pulls alternates which path goes first and pulls a fresh
// image each (random layers, pushed untimed just before), so neither path
// finds the other's content. Layers are uncompressed OCI tars of random
// bytes, so both paths spend their time on the pull itself, not on gzip.
// Before the timed pulls each path pulls one image per registry, untimed:
// what is measured is a node's steady state, where b9's cached challenges
// and tokens apply. B9_BENCH_N sets the pulls per path (default 10),
// B9_BENCH_ROWS a regexp of the rows to run ("RSS" for the memory rows,
// "profile plugin" and "profile standalone" for the profiles),
// B9_BENCH_UNPACKS b9's max_concurrent_unpacks, B9_BENCH_PROFILE a folder
// for CPU profiles.
func BenchmarkE2E(b *testing.B) {
	binaries(b)
	nPulls := 10
	if v, err := strconv.Atoi(os.Getenv("B9_BENCH_N")); err == nil && v > 0 {
		nPulls = v
	}
	pass := "bench-" + strconv.FormatUint(rand.Uint64(), 36)
	basic := registrytest.Start(b, registrytest.WithDiskStorage(), registrytest.WithBasicAuth(), registrytest.WithUser("bench", pass))
	token := registrytest.Start(b, registrytest.WithDiskStorage(), registrytest.WithTokenAuth(), registrytest.WithUser("bench", pass, "*"),
		registrytest.WithTokenExpiresIn(300*time.Second), registrytest.WithTokenLifetime(300*time.Second))
	bn := &benchEnv{b: b, n: nPulls, pass: pass}
	if expr := os.Getenv("B9_BENCH_ROWS"); expr != "" {
		re, err := regexp.Compile(expr)
		if err != nil {
			b.Fatalf("B9_BENCH_ROWS: %v", err)
		}
		bn.only = re
	}

	// CRI as on a stock node (its defaults: pulls through the transfer
	// service), overlayfs; info logging, as in production.
	profileDir := os.Getenv("B9_BENCH_PROFILE")
	// B9_BENCH_UNPACKS sets b9's max_concurrent_unpacks (stock CRI's
	// transfer service keeps its default, 1).
	var pluginTOML string
	if v, err := strconv.Atoi(os.Getenv("B9_BENCH_UNPACKS")); err == nil && v > 0 {
		pluginTOML = fmt.Sprintf("max_concurrent_unpacks = %d\n", v)
	}
	direct := newNode(b, nodeConfig{pullMode: "direct", snapshotter: "overlayfs", criDefaults: true, logLevel: "info", debug: profileDir != "", plugin: pluginTOML})
	// Two standalone daemons next to the same containerd: one per pull mode.
	direct.startStandalone("direct")
	fwdAddr, fwdProc := direct.startStandaloneNamed("standalone-forward", "forward")
	plugin, stock, standalone := bn.conn(direct.b9, true), bn.conn(direct.containerd, false), bn.conn(direct.standAddr, true)
	standaloneFwd := bn.conn(fwdAddr, true)
	for _, reg := range []*registrytest.Registry{basic, token} {
		bn.warm(reg, plugin, stock, standalone, standaloneFwd)
	}

	shapes := []struct {
		name          string
		layers, bytes int
	}{{"3 × 8 MiB", 3, 8 << 20}, {"1 × 64 MiB", 1, 64 << 20}, {"30 × 64 KiB", 30, 64 << 10}}
	for _, reg := range []struct {
		name string
		r    *registrytest.Registry
	}{{"htpasswd", basic}, {"token", token}} {
		for _, sh := range shapes {
			bn.pairs(fmt.Sprintf("plugin direct, %s, %s", reg.name, sh.name), reg.r, sh.layers, sh.bytes, plugin, stock)
		}
	}
	for _, reg := range []struct {
		name string
		r    *registrytest.Registry
	}{{"htpasswd", basic}, {"token", token}} {
		bn.pairs("standalone direct, "+reg.name+", 3 × 8 MiB", reg.r, 3, 8<<20, standalone, stock)
		bn.pairs("standalone forward, "+reg.name+", 3 × 8 MiB", reg.r, 3, 8<<20, standaloneFwd, stock)
	}
	bn.pairs("standalone direct, token, 30 × 64 KiB", token, 30, 64<<10, standalone, stock)
	bn.pairs("standalone forward, token, 30 × 64 KiB", token, 30, 64<<10, standaloneFwd, stock)
	bn.repulls("plugin direct, token, re-pull of a present image", token, plugin, stock)
	bn.concurrent("plugin direct, token, 20 concurrent pulls of 20 images (2 × 256 KiB), per batch", token, 20, plugin, stock)
	if profileDir != "" {
		// CPU profiles while one path pulls, in the order b9, stock,
		// stock, b9 for each shape, so neither path always goes first:
		// `go tool pprof -top` a path's two files together to see where
		// its time goes. Standalone pulls cost two processes, so both are
		// profiled: containerd-b9 and the standalone daemon.
		cdSock, saSock := filepath.Join(direct.dir, "debug.sock"), filepath.Join(direct.dir, "standalone-debug.sock")
		// Each comparison: the b9 path, the processes its pulls run in
		// (file prefix → debug socket), and the prefix of stock CRI's files.
		comparisons := []struct {
			row     string
			b9      benchPath
			b9Procs map[string]string
			stock   string
		}{
			{"profile plugin", plugin, map[string]string{"b9-direct": cdSock}, "stock-cri"},
			{"profile standalone", standalone, map[string]string{"standalone-containerd": cdSock, "standalone-daemon": saSock}, "stock-cri-vs-standalone"},
		}
		for _, shape := range []struct {
			name          string
			layers, bytes int
		}{{"3x8MiB", 3, 8 << 20}, {"30x64KiB", 30, 64 << 10}} {
			for _, c := range comparisons {
				if !bn.want(c.row) {
					continue
				}
				for i, p := range []benchPath{c.b9, stock, stock, c.b9} {
					procs := map[string]string{c.stock: cdSock}
					if p.b9 {
						procs = c.b9Procs
					}
					outs := map[string]string{}
					for prefix, sock := range procs {
						outs[filepath.Join(profileDir, fmt.Sprintf("%s-%s-%d.pprof", prefix, shape.name, i))] = sock
					}
					bn.profile(outs, token, p, shape.layers, shape.bytes)
				}
			}
		}
	}

	// Forward mode: the plugin hands each pull to CRI in process.
	direct.standalone.stop(b)
	fwdProc.stop(b)
	direct.cd.stop(b)
	if name := "plugin forward, token, 3 × 8 MiB"; bn.want(name) {
		forward := newNode(b, nodeConfig{pullMode: "forward", snapshotter: "overlayfs", criDefaults: true, logLevel: "info"})
		fwd, fstock := bn.conn(forward.b9, true), bn.conn(forward.containerd, false)
		bn.warm(token, fwd, fstock)
		bn.pairs(name, token, 3, 8<<20, fwd, fstock)
		forward.cd.stop(b)
	}

	var rss *rssResult
	if bn.want("RSS") {
		rss = bn.rss(token)
	}
	bn.print(rss)
}

// benchEnv is one BenchmarkE2E run.
type benchEnv struct {
	b *testing.B
	n int
	// only, if set, picks the rows (and "RSS") whose names it matches.
	only *regexp.Regexp
	pass string
	seq  int
	rows []benchRow
}

// benchPath is one way to pull: the b9 socket with the credential in the
// pod annotation, or containerd's CRI with it in PullImageRequest.auth.
type benchPath struct {
	client criapi.ImageServiceClient
	b9     bool
}

type benchSample struct {
	d            time.Duration
	reqs, tokens float64
}

type benchRow struct {
	name      string
	b9, stock []benchSample
	start     time.Time
}

func (bn *benchEnv) conn(sock string, b9 bool) benchPath {
	c, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		bn.b.Fatal(err)
	}
	bn.b.Cleanup(func() { c.Close() })
	return benchPath{client: criapi.NewImageServiceClient(c), b9: b9}
}

// pull pulls ref through p and returns its wall time.
func (bn *benchEnv) pull(p benchPath, ref string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req := &criapi.PullImageRequest{Image: &criapi.ImageSpec{Image: ref}, SandboxConfig: &criapi.PodSandboxConfig{
		Metadata: &criapi.PodSandboxMetadata{Name: "bench", Namespace: "default", Uid: "bench"},
	}}
	if p.b9 {
		req.SandboxConfig.Annotations = map[string]string{annKey: "bench:" + bn.pass}
	} else {
		req.Auth = &criapi.AuthConfig{Username: "bench", Password: bn.pass}
	}
	start := time.Now()
	_, err := p.client.PullImage(ctx, req)
	d := time.Since(start)
	if err != nil {
		bn.b.Fatalf("pull %s (b9 %v): %v", ref, p.b9, err)
	}
	return d
}

// image pushes a fresh image of layers random layers of size bytes as a
// new tag of repo: a node pulls new versions of the same repositories,
// whose pull tokens (scoped to the repository) b9 reuses.
func (bn *benchEnv) image(reg *registrytest.Registry, repo string, layers, size int) string {
	bn.seq++
	img := randomImage(bn.b, layers, size)
	return reg.PushImage(bn.b, "bench/"+repo, fmt.Sprintf("v%d", bn.seq), img, "bench", bn.pass).Ref
}

// warm pulls one small image per path, untimed.
func (bn *benchEnv) warm(reg *registrytest.Registry, paths ...benchPath) {
	for i, p := range paths {
		bn.pull(p, bn.image(reg, fmt.Sprintf("warm%d", i), 1, 1024))
	}
}

// pairs times n pulls per path of fresh images, alternating which goes
// first.
func (bn *benchEnv) pairs(name string, reg *registrytest.Registry, layers, size int, b9, stock benchPath) {
	if !bn.want(name) {
		return
	}
	row := benchRow{name: name, start: time.Now()}
	repo := fmt.Sprintf("r%d", len(bn.rows))
	for i := range bn.n {
		refB9, refStock := bn.image(reg, repo+"-b9", layers, size), bn.image(reg, repo+"-stock", layers, size)
		bn.pair(&row, i, reg, b9, stock, refB9, refStock)
	}
	bn.add(row)
}

// pair times one pull per path, b9 first when i is even.
func (bn *benchEnv) pair(row *benchRow, i int, reg *registrytest.Registry, b9, stock benchPath, refB9, refStock string) {
	one := func(p benchPath, ref string) benchSample {
		reg.Reset()
		d := bn.pull(p, ref)
		return benchSample{d: d, reqs: float64(registryRequests(reg)), tokens: float64(reg.TokenFetches())}
	}
	if i%2 == 0 {
		row.b9 = append(row.b9, one(b9, refB9))
		row.stock = append(row.stock, one(stock, refStock))
	} else {
		row.stock = append(row.stock, one(stock, refStock))
		row.b9 = append(row.b9, one(b9, refB9))
	}
}

// repulls times pulls of an image already on the node.
func (bn *benchEnv) repulls(name string, reg *registrytest.Registry, b9, stock benchPath) {
	if !bn.want(name) {
		return
	}
	start := time.Now()
	repo := fmt.Sprintf("r%d", len(bn.rows))
	refB9, refStock := bn.image(reg, repo+"-b9", 3, 1<<20), bn.image(reg, repo+"-stock", 3, 1<<20)
	bn.pull(b9, refB9)
	bn.pull(stock, refStock)
	row := benchRow{name: name, start: start}
	for i := range bn.n {
		bn.pair(&row, i, reg, b9, stock, refB9, refStock)
	}
	bn.add(row)
}

// concurrent times batches of k concurrent pulls of k fresh images; a
// sample is one batch's wall time, its counts per pull.
func (bn *benchEnv) concurrent(name string, reg *registrytest.Registry, k int, b9, stock benchPath) {
	if !bn.want(name) {
		return
	}
	row := benchRow{name: name, start: time.Now()}
	repo := fmt.Sprintf("r%d", len(bn.rows))
	batch := func(p benchPath) benchSample {
		refs := make([]string, k)
		for i := range refs {
			refs[i] = bn.image(reg, fmt.Sprintf("%s-%v-%d", repo, p.b9, i), 2, 256<<10)
		}
		reg.Reset()
		var wg sync.WaitGroup
		start := time.Now()
		for _, ref := range refs {
			wg.Go(func() { bn.pull(p, ref) })
		}
		wg.Wait()
		d := time.Since(start)
		return benchSample{d: d, reqs: float64(registryRequests(reg)) / float64(k), tokens: float64(reg.TokenFetches()) / float64(k)}
	}
	for i := range bn.n {
		if i%2 == 0 {
			row.b9 = append(row.b9, batch(b9))
			row.stock = append(row.stock, batch(stock))
		} else {
			row.stock = append(row.stock, batch(stock))
			row.b9 = append(row.b9, batch(b9))
		}
	}
	bn.add(row)
}

// want reports whether the row name is to run (B9_BENCH_ROWS).
func (bn *benchEnv) want(name string) bool { return bn.only == nil || bn.only.MatchString(name) }

func (bn *benchEnv) add(r benchRow) {
	bn.rows = append(bn.rows, r)
	// On stderr at once: the run is long, and a row is worth keeping.
	fmt.Fprintf(os.Stderr, "bench-e2e: %s: b9 median %s, stock median %s (section took %s)\n",
		r.name, median(r.b9).Round(time.Millisecond), median(r.stock).Round(time.Millisecond), time.Since(r.start).Round(time.Second))
}

func registryRequests(reg *registrytest.Registry) int {
	return reg.Count(func(q registrytest.Request) bool { return q.Server == registrytest.ServerRegistry })
}

// profile takes a 10 s CPU profile from each debug socket (out file →
// socket) at once while p pulls 16 fresh images (layers × size) from reg
// one after another.
func (bn *benchEnv) profile(outs map[string]string, reg *registrytest.Registry, p benchPath, layers, size int) {
	refs := make([]string, 16)
	for i := range refs {
		refs[i] = bn.image(reg, fmt.Sprintf("profile-%v", p.b9), layers, size)
	}
	done := make(chan error, len(outs))
	for out, sock := range outs {
		go func() { done <- fetchProfile(sock, out) }()
	}
	pulls := 0
	for _, ref := range refs {
		if len(done) > 0 {
			break
		}
		bn.pull(p, ref)
		pulls++
	}
	var errs []error
	for range outs {
		errs = append(errs, <-done)
	}
	fmt.Fprintf(os.Stderr, "bench-e2e: profiles %v: %d pulls (error: %v)\n", slices.Sorted(maps.Keys(outs)), pulls, errors.Join(errs...))
}

// fetchProfile writes a 10 s CPU profile from the debug socket sock (Go's
// /debug/pprof, which containerd and containerd-b9 standalone serve) to out.
func fetchProfile(sock, out string) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://debug/debug/pprof/profile?seconds=10")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

// rssResult is containerd-b9's resident memory with and without the plugin.
type rssResult struct {
	pulls                                      int
	withIdle, withAfter, plainIdle, plainAfter int64
}

// rss starts containerd-b9 with the plugin and the same binary with the
// plugin disabled, one after the other, and reads each one's VmRSS idle
// and after pulls of as many fresh small images (through b9 for the
// first, stock CRI for the second).
func (bn *benchEnv) rss(reg *registrytest.Registry) *rssResult {
	const pulls = 200
	res := &rssResult{pulls: pulls}
	start := time.Now()
	defer func() {
		fmt.Fprintf(os.Stderr, "bench-e2e: RSS section took %s\n", time.Since(start).Round(time.Second))
	}()
	for _, withB9 := range []bool{true, false} {
		n := newNode(bn.b, nodeConfig{pullMode: "direct", snapshotter: "overlayfs", criDefaults: true, logLevel: "info", withoutB9: !withB9})
		sock := n.containerd
		if withB9 {
			sock = n.b9
		}
		p := bn.conn(sock, withB9)
		time.Sleep(3 * time.Second)
		idle := vmRSS(bn.b, n.cd.cmd.Process.Pid)
		for range pulls {
			bn.pull(p, bn.image(reg, fmt.Sprintf("rss-%v", withB9), 1, 4096))
		}
		time.Sleep(3 * time.Second)
		after := vmRSS(bn.b, n.cd.cmd.Process.Pid)
		if withB9 {
			res.withIdle, res.withAfter = idle, after
		} else {
			res.plainIdle, res.plainAfter = idle, after
		}
		n.cd.stop(bn.b)
	}
	return res
}

// vmRSS is a process's resident set in bytes.
func vmRSS(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no VmRSS for %d", pid)
	return 0
}

func durations(s []benchSample) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = x.d
	}
	slices.Sort(out)
	return out
}

func median(s []benchSample) time.Duration { return quantile(s, 0.5) }

// quantile is the nearest-rank quantile of the samples' durations.
func quantile(s []benchSample, q float64) time.Duration {
	d := durations(s)
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func mean(s []benchSample, f func(benchSample) float64) float64 {
	t := 0.0
	for _, x := range s {
		t += f(x)
	}
	return t / float64(max(len(s), 1))
}

// print writes the table (Markdown, as the README carries it).
func (bn *benchEnv) print(rss *rssResult) {
	var w strings.Builder
	fmt.Fprintf(&w, "\nb9 vs stock containerd CRI, same containerd-b9 (%s, GOMAXPROCS %d), n = %d per path, alternating, a fresh image per pull\n\n",
		runtime.GOOS+"/"+runtime.GOARCH, runtime.GOMAXPROCS(0), bn.n)
	fmt.Fprintln(&w, "| path | b9 median | b9 p90 | stock median | stock p90 | b9 / stock (median) | registry requests / pull, b9 · stock | token calls / pull, b9 · stock |")
	fmt.Fprintln(&w, "|---|---|---|---|---|---|---|---|")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	for _, r := range bn.rows {
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %.3f | %.1f · %.1f | %.2f · %.2f |\n", r.name,
			ms(median(r.b9)), ms(quantile(r.b9, 0.9)), ms(median(r.stock)), ms(quantile(r.stock, 0.9)),
			float64(median(r.b9))/float64(median(r.stock)),
			mean(r.b9, func(s benchSample) float64 { return s.reqs }), mean(r.stock, func(s benchSample) float64 { return s.reqs }),
			mean(r.b9, func(s benchSample) float64 { return s.tokens }), mean(r.stock, func(s benchSample) float64 { return s.tokens }))
	}
	if rss == nil {
		fmt.Print(w.String())
		return
	}
	mb := func(v int64) string { return fmt.Sprintf("%.1f MB", float64(v)/1e6) }
	fmt.Fprintf(&w, "\ncontainerd-b9 RSS | with the b9 plugin | plugin disabled | difference\n---|---|---|---\n")
	fmt.Fprintf(&w, "idle | %s | %s | %s\n", mb(rss.withIdle), mb(rss.plainIdle), mb(rss.withIdle-rss.plainIdle))
	fmt.Fprintf(&w, "after %d pulls | %s | %s | %s\n", rss.pulls, mb(rss.withAfter), mb(rss.plainAfter), mb(rss.withAfter-rss.plainAfter))
	fmt.Print(w.String())
	for _, r := range bn.rows {
		bn.b.ReportMetric(float64(median(r.b9))/float64(median(r.stock)), "ratio:"+strings.ReplaceAll(r.name, " ", ""))
	}
}

// randomImage is an image of layers uncompressed OCI layers, each a tar of
// one file of size random bytes.
func randomImage(tb testing.TB, layers, size int) v1.Image {
	tb.Helper()
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	src := rand.NewChaCha8(seed)
	ls := make([]v1.Layer, layers)
	for i := range ls {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data%d", i), Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.CopyN(tw, src, int64(size)); err != nil {
			tb.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			tb.Fatal(err)
		}
		ls[i] = static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), ls...)
	if err != nil {
		tb.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}
