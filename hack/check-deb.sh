#!/usr/bin/env bash
# check-deb.sh DEB: the package holds what contrib/nfpm.yaml promises, with
# the right modes, and its control file names it. `make deb` runs it.
set -euo pipefail
deb=$1
contents=$(dpkg-deb --contents "$deb")
want=(
	'-rwxr-xr-x ./usr/bin/containerd-b9'
	'-rwxr-xr-x ./usr/bin/ctr-b9'
	'-rw-r--r-- ./lib/systemd/system/b9-resolver.service'
	'-rw-r--r-- ./usr/share/b9-resolver/containerd.service.d/b9-resolver.conf'
	'-rw-r--r-- ./usr/share/doc/b9-resolver/examples/config.toml'
	'drwx------ ./var/lib/b9-resolver/'
)
for w in "${want[@]}"; do
	mode=${w%% *} path=${w#* }
	if ! awk -v m="$mode" -v p="$path" '$1 == m && $NF == p { found = 1 } END { exit !found }' <<<"$contents"; then
		echo "check-deb: $deb lacks $path with mode $mode:" >&2
		echo "$contents" >&2
		exit 1
	fi
done
[[ $(dpkg-deb --field "$deb" Package) == b9-resolver ]] || { echo "check-deb: Package is not b9-resolver" >&2; exit 1; }
# The listing is read whole before it is searched: grep -q would stop at
# the first match and, under pipefail, tar's SIGPIPE would fail the check.
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
grep -qx './postinst' <<<"$control" || { echo "check-deb: no postinst" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --extract "$deb" "$tmp"
"$tmp/usr/bin/ctr-b9" --help >/dev/null
"$tmp/usr/bin/containerd-b9" probe --help >/dev/null
echo "check-deb: $deb ok ($(dpkg-deb --field "$deb" Version), $(dpkg-deb --field "$deb" Architecture))"
