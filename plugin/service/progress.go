package service

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/log"
)

// progressCheckInterval is how often a pull's progress is looked at, as
// CRI does (more often for timeouts shorter than twice this).
const progressCheckInterval = 10 * time.Second

// pullProgress is CRI's image_pull_progress_timeout for one direct pull:
// it counts the bytes read from the registry and the requests open, and
// cancels the pull when requests stay open with nothing read for the
// timeout. A slow pull that keeps reading is never cancelled.
type pullProgress struct {
	open atomic.Int32
	read atomic.Uint64
}

// watch cancels the pull (cancel) when it stalls for timeout; it stops
// when ctx is done.
func (p *pullProgress) watch(ctx context.Context, name string, timeout time.Duration, cancel context.CancelFunc) {
	interval := progressCheckInterval
	if timeout < 2*interval {
		interval = timeout / 2
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastRead, lastSeen, wasOpen := uint64(0), time.Now(), int32(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		open, read := p.open.Load(), p.read.Load()
		// Reset when idle, when bytes arrived, or when a request has just
		// opened after an idle spell (it gets a full timeout of its own).
		if open == 0 || read > lastRead || wasOpen == 0 {
			lastRead, lastSeen, wasOpen = read, time.Now(), open
			continue
		}
		wasOpen = open
		if time.Since(lastSeen) > timeout {
			log.G(ctx).WithField("image", name).WithField("image_pull_progress_timeout", timeout).
				Warn("b9-resolver: cancelling the pull: no progress")
			cancel()
			return
		}
	}
}

// hosts wraps each registry host's transport to count for p. The client
// is copied per pull already (resolver.Hosts), so wrapping it here stays
// within this pull.
func (p *pullProgress) hosts(next docker.RegistryHosts) docker.RegistryHosts {
	return func(host string) ([]docker.RegistryHost, error) {
		hosts, err := next(host)
		for i := range hosts {
			if c := hosts[i].Client; c != nil {
				rt := c.Transport
				if rt == nil {
					rt = http.DefaultTransport
				}
				c.Transport = countingTransport{next: rt, p: p}
			}
		}
		return hosts, err
	}
}

type countingTransport struct {
	next http.RoundTripper
	p    *pullProgress
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.p.open.Add(1)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		t.p.open.Add(-1)
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, p: t.p}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	p    *pullProgress
	once sync.Once
}

func (b *countingBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.p.read.Add(uint64(n))
	return n, err
}

func (b *countingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.p.open.Add(-1) })
	return err
}
