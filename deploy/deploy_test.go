package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/beam-cloud/b9-resolver/plugin/service"
)

// decodeStrict decodes a YAML document into obj as the API server's strict
// field validation does: YAML duplicate keys, unknown fields and fields
// spelt with other letter cases (which encoding/json alone would accept)
// are errors.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%v", strict)
	}
	return nil
}

// objects decodes every document of every manifest strictly into its
// API type.
type objects struct {
	namespaces []corev1.Namespace
	configMaps []corev1.ConfigMap
	daemonSets []appsv1.DaemonSet
}

func load(t *testing.T) objects {
	t.Helper()
	var o objects
	files, err := fs.Glob(Manifests, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests (%v)", err)
	}
	for _, f := range files {
		b, _ := Manifests.ReadFile(f)
		for i, doc := range splitDocs(b) {
			where := fmt.Sprintf("%s document %d", f, i+1)
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var err error
			switch meta.APIVersion + " " + meta.Kind {
			case "v1 Namespace":
				var ns corev1.Namespace
				err = decodeStrict(doc, &ns)
				o.namespaces = append(o.namespaces, ns)
			case "v1 ConfigMap":
				var cm corev1.ConfigMap
				err = decodeStrict(doc, &cm)
				o.configMaps = append(o.configMaps, cm)
			case "apps/v1 DaemonSet":
				var ds appsv1.DaemonSet
				err = decodeStrict(doc, &ds)
				o.daemonSets = append(o.daemonSets, ds)
			default:
				t.Fatalf("%s: %s %s has no check here; add one", where, meta.APIVersion, meta.Kind)
			}
			if err != nil {
				t.Errorf("%s (%s): %v", where, meta.Kind, err)
			}
		}
	}
	return o
}

func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// TestManifestsDecodeStrictly: the schema check. A misspelt field, a
// wrong type or an object kind without a check fails.
func TestManifestsDecodeStrictly(t *testing.T) {
	o := load(t)
	if len(o.namespaces) != 1 || len(o.configMaps) != 1 || len(o.daemonSets) != 1 {
		t.Fatalf("want one Namespace, ConfigMap and DaemonSet; got %d, %d, %d", len(o.namespaces), len(o.configMaps), len(o.daemonSets))
	}
	ns := o.namespaces[0].Name
	for _, m := range []struct{ kind, name, namespace string }{
		{"ConfigMap", o.configMaps[0].Name, o.configMaps[0].Namespace},
		{"DaemonSet", o.daemonSets[0].Name, o.daemonSets[0].Namespace},
	} {
		if !dns1123Label.MatchString(m.name) || m.namespace != ns {
			t.Errorf("%s %q in namespace %q: want a DNS-1123 name in %q", m.kind, m.name, m.namespace, ns)
		}
	}
}

// Strict decoding does catch what the schema check is for.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	b, _ := Manifests.ReadFile("daemonset.yaml")
	for name, edit := range map[string][2]string{
		"misspelt field": {"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		"wrong type":     {"terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: thirty"},
		"unknown field":  {"hostNetwork: true", "hostNetwork: true\n      hostNetworking: true"},
		"duplicate key":  {"hostNetwork: true", "hostNetwork: true\n      hostNetwork: false"},
	} {
		bad := strings.Replace(string(b), edit[0], edit[1], 1)
		if bad == string(b) {
			t.Fatalf("%s: %q not in daemonset.yaml", name, edit[0])
		}
		var ds appsv1.DaemonSet
		if err := decodeStrict([]byte(bad), &ds); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestDaemonSet: what the API server and kubelet would refuse, and what
// the daemon needs: selector and labels, surge rollout, volumes and
// mounts, the least privileges, the probe, the metrics port.
func TestDaemonSet(t *testing.T) {
	o := load(t)
	ds := o.daemonSets[0]
	spec := ds.Spec.Template.Spec

	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("update strategy %+v: want a surge rollout (maxSurge 1, maxUnavailable 0): kubelet needs the old pod's socket to start the new one", ds.Spec.UpdateStrategy)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]

	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup || !dns1123Label.MatchString(v.Name) {
			t.Errorf("volume name %q: duplicate or not DNS-1123", v.Name)
		}
		volumes[v.Name] = v
		if hp := v.HostPath; hp != nil {
			valid := []corev1.HostPathType{corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate, corev1.HostPathSocket, corev1.HostPathFile}
			if hp.Type == nil || !slices.Contains(valid, *hp.Type) || !path.IsAbs(hp.Path) {
				t.Errorf("volume %s: hostPath %q type %v", v.Name, hp.Path, hp.Type)
			}
		}
	}
	mounts := map[string]corev1.VolumeMount{} // by mount path
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("mount %s: no such volume", m.Name)
		}
		mounts[m.MountPath] = m
	}
	if len(mounts) != len(volumes) {
		t.Errorf("%d mounts for %d volumes: each volume mounted once", len(mounts), len(volumes))
	}

	// The daemon's config: keys it knows (LoadConfigFile refuses unknown
	// ones), paths on mounts, the socket writable, containerd's read-only.
	cm := o.configMaps[0]
	cfgPath := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			cfgPath = v
		}
	}
	cfgMount, ok := mounts[filepath.Dir(cfgPath)]
	if !ok || volumes[cfgMount.Name].ConfigMap == nil || volumes[cfgMount.Name].ConfigMap.Name != cm.Name {
		t.Fatalf("--config=%s is not on the ConfigMap %s's mount", cfgPath, cm.Name)
	}
	text, ok := cm.Data[filepath.Base(cfgPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, filepath.Base(cfgPath))
	}
	tmp := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := service.LoadConfigFile(tmp)
	if err != nil {
		t.Fatalf("the ConfigMap's config: %v", err)
	}
	onMount := func(what, p string, writable bool) {
		t.Helper()
		m, ok := mounts[filepath.Dir(p)]
		if !ok {
			t.Errorf("%s %s: its folder is not mounted", what, p)
			return
		}
		if hp := volumes[m.Name].HostPath; hp == nil || hp.Path != filepath.Dir(p) {
			t.Errorf("%s %s: mounted from %+v, want the node's own %s", what, p, volumes[m.Name].HostPath, filepath.Dir(p))
		}
		if m.ReadOnly == writable {
			t.Errorf("%s %s: mount readOnly=%v", what, p, m.ReadOnly)
		}
	}
	onMount("address", cfg.Address, true)
	onMount("containerd_address", cfg.ContainerdAddress, false)
	if cfg.StateDir == "" {
		t.Error("no state_dir: pull records would not survive a restart or an upgrade")
	} else if m, ok := mounts[cfg.StateDir]; !ok || m.ReadOnly {
		t.Errorf("state_dir %s is not a writable mount", cfg.StateDir)
	}
	for _, p := range strings.Split(cfg.ConfigPath, ":") {
		if _, ok := mounts[p]; !ok {
			t.Errorf("config_path %s is not mounted", p)
		}
	}

	// Sealed documents: the ConfigMap's commented [sealed] lines, once
	// uncommented, name identity files on the optional Secret volume,
	// mounted read-only with a mode the daemon accepts for identity files,
	// and a pattern that skips the volume's own ..data entries.
	sealedText := regexp.MustCompile(`(?m)^#(\[sealed\]|identity_files = )`).ReplaceAllString(text, "$1")
	if sealedText == text {
		t.Fatal("the ConfigMap has no commented [sealed] identity_files to enable")
	}
	if err := os.WriteFile(tmp, []byte(sealedText), 0o600); err != nil {
		t.Fatal(err)
	}
	scfg, err := service.LoadConfigFile(tmp)
	if err != nil {
		t.Fatalf("the ConfigMap's config with [sealed] enabled: %v", err)
	}
	if len(scfg.Sealed.IdentityFiles) != 1 {
		t.Fatalf("sealed.identity_files = %v, want one pattern", scfg.Sealed.IdentityFiles)
	}
	pattern := scfg.Sealed.IdentityFiles[0]
	idMount, ok := mounts[filepath.Dir(pattern)]
	sec := volumes[idMount.Name].Secret
	if !ok || !idMount.ReadOnly || sec == nil || sec.Optional == nil || !*sec.Optional || sec.DefaultMode == nil || *sec.DefaultMode != 0o400 {
		t.Errorf("identity files %s: want a read-only mount of an optional Secret with defaultMode 0400, got mount %+v volume %+v", pattern, idMount, volumes[idMount.Name])
	}
	for name, want := range map[string]bool{"node.key": true, "..data": false, "..2026_11_30_01": false} {
		if got, _ := filepath.Match(pattern, filepath.Join(filepath.Dir(pattern), name)); got != want {
			t.Errorf("identity pattern %s matches %s: %v, want %v", pattern, name, got, want)
		}
	}

	// Privileges: root for the sockets, nothing else.
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v: want unprivileged, no escalation, all capabilities dropped, read-only root", sc)
	}
	if spec.HostPID || spec.HostIPC || spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("hostPID/hostIPC or a service account token: the daemon needs neither")
	}

	// Readiness from the socket.
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) < 2 || p.Exec.Command[1] != "probe" || !slices.Contains(p.Exec.Command, "--address="+cfg.Address) {
			t.Errorf("%s probe %+v: want `containerd-b9 probe --address=%s`", name, p, cfg.Address)
		}
	}
	if c.LivenessProbe != nil {
		t.Error("a liveness probe would restart the daemon, and kubelet cannot start it again without its socket")
	}
	if !slices.Contains(c.Args, "--takeover-timeout=10m") {
		t.Errorf("args %v: want --takeover-timeout so the surge pod waits for the old one", c.Args)
	}

	// Metrics: the flag's port is the declared port and the scrape annotation's.
	var port int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			port = p.ContainerPort
		}
	}
	want := fmt.Sprintf(":%d", port)
	if port == 0 || !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--metrics-address=") && strings.HasSuffix(a, want) }) ||
		ds.Spec.Template.Annotations["prometheus.io/port"] != fmt.Sprint(port) {
		t.Errorf("metrics port %d: args %v, annotations %v", port, c.Args, ds.Spec.Template.Annotations)
	}
	for _, e := range c.Env {
		if strings.Contains(strings.Join(c.Args, " "), "$("+e.Name+")") && (e.ValueFrom == nil || e.ValueFrom.FieldRef == nil) {
			t.Errorf("env %s used in args but not from the downward API", e.Name)
		}
	}
	if !bytes.Contains([]byte(c.Image), []byte("b9-resolver")) {
		t.Errorf("image %q", c.Image)
	}
}
