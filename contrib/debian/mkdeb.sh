#!/usr/bin/env bash
# Pack the tree `make install` staged (DESTDIR=ROOT, Debian's paths) into
# OUTDIR/syncd_VERSION_ARCH.deb.  Called by `make deb`; needs dpkg-dev.
#
# What it does to the staged tree: the byte-code is taken out (the postinst
# makes it on the machine), and so are pip and setuptools (syncd needs
# neither at run time) and PyYAML's C loader; the compiled modules are
# stripped; the man page is compressed; the example node config becomes
# /etc/syncd/inet6.yaml.example, a conffile; /usr/share/doc/syncd gets the
# copyright (syncd's, and the license of every Python distribution in the
# environment), a changelog and the docs; DEBIAN/ gets the maintainer
# scripts and the control file, whose Depends come from the compiled modules
# (dpkg-shlibdeps) and from the Python the environment is tied to.
#
# Maintainer: DEB_MAINTAINER ("Name <address>"), else the author of the
# commit being built.
set -euo pipefail

usage() { echo "usage: $0 ROOT OUTDIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
root=$(realpath "$1")
outdir=$2
here=$(dirname "$(realpath "$0")")
src=$(realpath "$here/../..")
venv=$root/opt/syncd
python=$venv/bin/python
[ -f "$venv/pyvenv.cfg" ] || { echo "$0: $venv is not a virtual environment: stage it with make install" >&2; exit 2; }

maintainer=${DEB_MAINTAINER:-$(git -C "$src" log -1 --format='%an <%ae>' 2>/dev/null || true)}
if [ -z "$maintainer" ]; then
    echo "$0: who maintains this package? set DEB_MAINTAINER='Name <address>'" >&2
    exit 2
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$src" log -1 --format=%ct 2>/dev/null || date +%s)}

version=$("$python" -I -m syncd --version)
version=${version#syncd }
arch=$(dpkg --print-architecture)
# a virtual environment runs only with the Python minor version it was made with
pyversion=$("$python" -I -c 'import sys; print(*sys.version_info[:2], sep=".")')
pynext=$("$python" -I -c 'import sys; print(sys.version_info[0], sys.version_info[1] + 1, sep=".")')
site=$venv/lib/python$pyversion/site-packages

# --- the environment: what runs, and only that -----------------------------
"$python" -I -m pip uninstall --yes --quiet --disable-pip-version-check --root-user-action=ignore setuptools pip
find "$root" -depth -type d -name __pycache__ -exec rm -rf {} +
# PyYAML's wheel links its own copy of libyaml into yaml/_yaml, the C
# loader, which syncd does not use (yaml.SafeLoader is pure Python)
rm -f "$site"/yaml/_yaml.*.so
rm -rf "$venv/include"
find "$venv" -name '*.so' -type f -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +

# --- files beside the environment --------------------------------------------
gzip -9nf "$root/usr/share/man/man1/syncd.1"
install -D -m 0644 "$src/examples/inet6.yaml" "$root/etc/syncd/inet6.yaml.example"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/syncd"
doc=$root/usr/share/doc/syncd
install -d "$doc/docs"
gzip -9n <"$src/README.md" >"$doc/README.md.gz"
for page in "$src"/docs/*.md; do gzip -9n <"$page" >"$doc/docs/$(basename "$page").gz"; done
{
    printf 'syncd (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * syncd %s, built from its sources' "$version"
    if rev=$(git -C "$src" rev-parse --short HEAD 2>/dev/null); then printf ' (git %s)' "$rev"; fi
    printf '.\n\n -- %s  %s\n' "$maintainer" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
{
    printf 'syncd %s\n\n' "$version"
    cat "$src/LICENSE"
    printf '\nThe virtual environment in /opt/syncd carries these Python distributions,\n'
    printf 'each with its license files in %s/NAME-VERSION.dist-info:\n\n' "${site#"$root"}"
    "$python" -I - <<'PY'
import importlib.metadata as md

for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"].lower()):
    meta = dist.metadata
    if meta["Name"] == "syncd":
        continue
    licence = meta["License-Expression"] or next(
        (c.rsplit(" :: ", 1)[1] for c in meta.get_all("Classifier") or [] if c.startswith("License :: ")),
        (meta["License"] or "see its license files").splitlines()[0],
    )
    print(f"  {meta['Name']} {meta['Version']}: {licence}")
PY
    printf '\nDebian has the text of Apache-2.0 and GPL-2 in /usr/share/common-licenses.\n'
} >"$doc/copyright"

# --- DEBIAN/ -----------------------------------------------------------------
# dpkg-shlibdeps finds the package's tree by its DEBIAN/, and wants a
# debian/control beside it: debhelper's layout, ROOT being debian/syncd, as
# `make deb` stages it
install -d -m 0755 "$root/DEBIAN"
printf 'Source: syncd\n\nPackage: syncd\nArchitecture: any\n' >"$(dirname "$root")/control"
mapfile -t modules < <(find "$venv" -name '*.so' -type f)
shlibs=$(cd "$(dirname "$root")/.." && dpkg-shlibdeps --warnings=1 -O "${modules[@]}")
shlibs=${shlibs#shlibs:Depends=}

chmod -R u+rwX,go+rX,go-w "$root"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
echo /etc/syncd/inet6.yaml.example >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    >"$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: syncd
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: python3 (>= $pyversion~), python3 (<< $pynext), $shlibs
Recommends: openssh-client, tinc
Section: net
Priority: optional
Description: keep a tinc VPN's host files in sync from a signed git repository
 syncd keeps the hosts/ directory of a tinc VPN identical on every node,
 from one git repository of host files that the network's admins sign.
 .
 syncd check validates host files exactly as tincd reads them, and the
 network against the repository's policy (in CI and as a pre-commit hook).
 syncd sync, run by a systemd timer or as the agent syncd run, fetches the
 repository, verifies that every new commit is signed by someone allowed to
 make it, installs the changed host files atomically and reloads tincd.
 .
 This package carries syncd and its Python dependencies in a virtual
 environment of their own in /opt/syncd, made with Debian's python3.
EOF

deb=$outdir/syncd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
