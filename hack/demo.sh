#!/usr/bin/env bash
# make demo: per-pod registry credentials on a node's pull path, end to end.
#
# As root, on a fresh machine: starts a registry with htpasswd auth on
# 127.0.0.1, pushes a small image, runs bin/containerd-b9 (containerd with
# the b9-resolver plugin) under a temp dir with the native snapshotter,
# and pulls the image with crictl through the b9 socket — first without a
# credential (refused), then with the pod annotation
# b9.beam.cloud/image-credentials. Shows what containerd's CRI then lists,
# what `ctr-b9 creds` explains, pulls again with the credential sealed for
# the node's key and bound to the pod's namespace (refused in another
# namespace), and cleans everything up.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root: containerd mounts snapshots. Try: sudo make demo" >&2
  exit 1
fi

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step() { printf '\033[2m$ %s\033[0m\n' "$*"; }

export CGO_ENABLED=0
cd "$root"
[ -x bin/containerd-b9 ] || make bin/containerd-b9
[ -x bin/ctr-b9 ] || make bin/ctr-b9
crictl=$root/.cache/bin/crictl
if [ ! -x "$crictl" ]; then
  bold "installing crictl into .cache/bin"
  (cd /tmp && GOBIN=$root/.cache/bin GOFLAGS=-mod=mod go install sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0)
fi

work=$(mktemp -d /tmp/b9demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  # Bind mounts containerd may leave when killed.
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/demo-registry" ./hack/demo-registry

bold "1. a private registry on 127.0.0.1 (htpasswd auth), with one image"
password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
umask 077
printf '%s' "$password" >"$work/password"
setsid "$work/demo-registry" --user demo --password-file "$work/password" --push demo/hello:v1 --dir "$work" \
  >"$work/registry.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^REF=' "$work/registry.out" 2>/dev/null && break; sleep 0.1; done
ref=$(sed -n 's/^REF=//p' "$work/registry.out")
[ -n "$ref" ] || { cat "$work/registry.out"; exit 1; }
echo "pushed $ref (user demo, password in $work/password)"

bold "2. containerd-b9 under $work (plugin io.containerd.grpc.v1.b9-resolver, pull_mode direct)"
mkdir -p "$work/identities"
step "ctr-b9 keygen identities/node.key   # the node's key for sealed documents"
recipient=$("$root/bin/ctr-b9" keygen "$work/identities/node.key")
echo "recipient $recipient"
cat >"$work/config.toml" <<EOF
version = 3
root = '$work/root'
state = '$work/state'
disabled_plugins = ['io.containerd.nri.v1.nri']
required_plugins = ['io.containerd.grpc.v1.b9-resolver']
[grpc]
  address = '$work/containerd.sock'
[ttrpc]
  address = '$work/containerd.sock.ttrpc'
[plugins.'io.containerd.internal.v1.opt']
  path = '$work/opt'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'native'
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = 'linux/amd64'
  snapshotter = 'native'
  differ = 'walking'
[plugins.'io.containerd.grpc.v1.b9-resolver']
  address = '$work/b9/b9.sock'
  pull_mode = 'direct'
  snapshotter = 'native'
  config_path = '$work/certs.d'
  [plugins.'io.containerd.grpc.v1.b9-resolver'.sealed]
    identity_files = ['$work/identities/*.key']
EOF
sed -n '/b9-resolver/,$p' "$work/config.toml"
setsid "$root/bin/containerd-b9" --config "$work/config.toml" --log-level debug >"$work/containerd.log" 2>&1 &
pids+=($!)
for sock in "$work/containerd.sock" "$work/b9/b9.sock"; do
  for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { tail -20 "$work/containerd.log"; exit 1; }
done
ls -ld "$work/b9" "$work/b9/b9.sock"

touch "$work/crictl.yaml"
cri() { "$crictl" --config "$work/crictl.yaml" -r "unix://$work/containerd.sock" "$@"; }
pod() {
  cat >"$work/pod.json" <<EOF
{"metadata": {"name": "demo", "namespace": "${2:-default}", "uid": "demo-$RANDOM"},
 "annotations": {$1}}
EOF
}

bold "3. a pod without credentials: refused"
pod ''
step "crictl -i unix://$work/b9/b9.sock pull --pod-config pod.json $ref"
cri -i "unix://$work/b9/b9.sock" pull --pod-config "$work/pod.json" "$ref" 2>&1 | sed 's/^/  /' || true

bold "4. a pod with the credential in its annotation: pulled"
pod "\"b9.beam.cloud/image-credentials\": \"demo:$password\""
sed "s/$password/<password>/" "$work/pod.json"
step "crictl -i unix://$work/b9/b9.sock pull --pod-config pod.json $ref"
cri -i "unix://$work/b9/b9.sock" pull --pod-config "$work/pod.json" "$ref" | tee "$work/pull.out"

bold "5. containerd's own CRI lists it at once (crictl images against containerd)"
cri -i "unix://$work/containerd.sock" images | tee "$work/images.out"

bold "6. what ctr-b9 says about that credential"
step "ctr-b9 creds --pod-config pod.json $ref"
"$root/bin/ctr-b9" creds --pod-config "$work/pod.json" "$ref" | tee "$work/creds.out"

bold "7. the plugin's log line for the pull"
grep 'b9-resolver: pulled image' "$work/containerd.log" | tail -1 | sed 's/^/  /'

bold "8. the same credential sealed for this node and namespace default"
step "printf 'demo:<password>' | ctr-b9 seal --recipient $recipient --namespace default --not-after 1h"
sealed=$(printf 'demo:%s' "$password" | "$root/bin/ctr-b9" seal --recipient "$recipient" --namespace default --not-after 1h)
echo "${sealed:0:72}…  (${#sealed} bytes: what the API server, etcd and crictl inspectp would hold)"
pod "\"b9.beam.cloud/image-credentials\": \"$sealed\""
step "crictl -i unix://$work/b9/b9.sock pull --pod-config pod.json $ref"
cri -i "unix://$work/b9/b9.sock" pull --pod-config "$work/pod.json" "$ref" | tee "$work/sealed.out"
pod "\"b9.beam.cloud/image-credentials\": \"$sealed\"" other
step "the same value in a pod of namespace other"
cri -i "unix://$work/b9/b9.sock" pull --pod-config "$work/pod.json" "$ref" 2>&1 | sed 's/^/  /' | tee -a "$work/sealed.out" || true

leaks=$(cat "$work/containerd.log" "$work/pull.out" "$work/images.out" "$work/creds.out" "$work/sealed.out" | grep -c -F "$password" || true)
if [ "$leaks" != 0 ]; then
  echo "FAIL: the password appears $leaks times in logs or output" >&2
  exit 1
fi
bold "done: the password appears nowhere in containerd's log or the output above; cleaning up"
