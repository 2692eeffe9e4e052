package cloudemu

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

// Canary starts every secret value tests plant, so one search finds any
// that leaks into an error or a log line.
const Canary = "CANARY-"

// LogBuffer collects what the process logs while a test runs.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// CaptureLogs sends the logrus standard logger (containerd's log.L) and
// slog's default logger, at their most verbose, to a buffer until tb ends.
// Tests using it must not run in parallel with others of the package.
func CaptureLogs(tb testing.TB) *LogBuffer {
	lb := &LogBuffer{}
	std := logrus.StandardLogger()
	out, lvl := std.Out, std.GetLevel()
	std.SetOutput(lb)
	std.SetLevel(logrus.TraceLevel)
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	tb.Cleanup(func() {
		std.SetOutput(out)
		std.SetLevel(lvl)
		slog.SetDefault(prev)
	})
	return lb
}

// AssertNoSecrets fails tb if any text contains the Canary prefix or one of
// the extra secrets (tokens an emulator issued, say).
func AssertNoSecrets(tb testing.TB, what string, texts []string, extra ...string) {
	tb.Helper()
	for _, s := range texts {
		if strings.Contains(s, Canary) {
			tb.Errorf("%s leaks a canary secret: %q", what, s)
		}
		for _, e := range extra {
			if e != "" && strings.Contains(s, e) {
				tb.Errorf("%s leaks an issued secret", what)
			}
		}
	}
}
