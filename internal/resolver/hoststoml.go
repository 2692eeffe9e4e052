package resolver

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
)

// hostsFile mirrors containerd's hosts.toml schema (core/remotes/docker/config)
// with loose types where containerd accepts several shapes.
type hostsFile struct {
	hostsEntry
	Server string                `toml:"server"`
	Host   map[string]hostsEntry `toml:"host"`
}

type hostsEntry struct {
	Capabilities []string       `toml:"capabilities"`
	CACert       any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
}

// checkHostsFile validates dir/hosts.toml as containerd would read it.
// containerd logs a hosts.toml it cannot parse and carries on without it —
// mirrors, CAs and headers silently stop applying — so b9-resolver fails
// the pull instead, naming the file and the problem. Messages name keys and
// types, never values: a header may hold a static token.
func checkHostsFile(dir string) error {
	path := filepath.Join(dir, "hosts.toml")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hosts file %s: %w", path, err)
	}
	if err := validateHosts(b); err != nil {
		return fmt.Errorf("hosts file %s: %w", path, err)
	}
	return nil
}

func validateHosts(b []byte) error {
	var f hostsFile
	if err := toml.Unmarshal(b, &f); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			// Position only: the parser's messages can quote characters of
			// the line, and a header line may hold a token.
			return fmt.Errorf("not valid TOML at line %d column %d: %w", row, col, errdefs.ErrInvalidArgument)
		}
		var serr *toml.StrictMissingError
		if errors.As(err, &serr) {
			return fmt.Errorf("%s: %w", serr.Error(), errdefs.ErrInvalidArgument)
		}
		// Type mismatches ("cannot decode TOML string into []string").
		return fmt.Errorf("%s: %w", err.Error(), errdefs.ErrInvalidArgument)
	}
	if f.Server != "" {
		if err := checkServer(f.Server); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	if err := f.hostsEntry.check(); err != nil {
		return err
	}
	for name, h := range f.Host {
		if err := checkServer(name); err != nil {
			return fmt.Errorf("[host.%q]: %w", name, err)
		}
		if err := h.check(); err != nil {
			return fmt.Errorf("[host.%q]: %w", name, err)
		}
	}
	return nil
}

func checkServer(s string) error {
	raw := s
	if scheme, _, ok := strings.Cut(s, "://"); ok && scheme != "http" && scheme != "https" {
		return fmt.Errorf("scheme %q is not http or https: %w", scheme, errdefs.ErrInvalidArgument)
	}
	if !strings.HasPrefix(raw, "http") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("not a registry URL: %w", errdefs.ErrInvalidArgument)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q is not http or https: %w", u.Scheme, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (h hostsEntry) check() error {
	for _, c := range h.Capabilities {
		switch strings.ToLower(c) {
		case "pull", "resolve", "push", "referrers":
		default:
			return fmt.Errorf("capabilities: unknown capability %q (want pull, resolve, push, referrers): %w", c, errdefs.ErrInvalidArgument)
		}
	}
	if err := checkPaths("ca", h.CACert, false); err != nil {
		return err
	}
	if err := checkPaths("client", h.Client, true); err != nil {
		return err
	}
	for k, v := range h.Header {
		switch v := v.(type) {
		case string:
		case []any:
			for _, e := range v {
				if _, ok := e.(string); !ok {
					return fmt.Errorf("header %q: want a string or an array of strings, got an array holding %s: %w", k, tomlType(e), errdefs.ErrInvalidArgument)
				}
			}
		default:
			return fmt.Errorf("header %q: want a string or an array of strings, got %s: %w", k, tomlType(v), errdefs.ErrInvalidArgument)
		}
	}
	if h.DialTimeout != "" {
		if _, err := time.ParseDuration(h.DialTimeout); err != nil {
			return fmt.Errorf("dial_timeout %q is not a duration (like \"5s\"): %w", h.DialTimeout, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// checkPaths checks "ca" (a path or paths) and "client" (also pairs).
func checkPaths(key string, v any, pairs bool) error {
	switch v := v.(type) {
	case nil, string:
		return nil
	case []any:
		for _, e := range v {
			switch e := e.(type) {
			case string:
			case []any:
				if !pairs || len(e) != 2 {
					return fmt.Errorf("%s: invalid entry (an array of %d): %w", key, len(e), errdefs.ErrInvalidArgument)
				}
				for _, p := range e {
					if _, ok := p.(string); !ok {
						return fmt.Errorf("%s: pair holds %s, want paths: %w", key, tomlType(p), errdefs.ErrInvalidArgument)
					}
				}
			default:
				return fmt.Errorf("%s: entry is %s, want a path: %w", key, tomlType(e), errdefs.ErrInvalidArgument)
			}
		}
		return nil
	default:
		return fmt.Errorf("%s: want a path or an array of paths, got %s: %w", key, tomlType(v), errdefs.ErrInvalidArgument)
	}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64, float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("a %T", v)
}
