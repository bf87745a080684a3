#!/usr/bin/env bash
# The Debian package as a node's admin meets it: lintian (an error fails),
# then `apt-get install ./syncd_*.deb` into a fresh minimal Debian made with
# debootstrap (the host's release: the package is built for its python3), so
# that the package's Depends alone make syncd run; the files where the README
# says; nothing started or enabled; the units enabled with systemctl --root;
# an upgrade in place; `dpkg -r` keeping the conffile, `dpkg -P` removing it.
#
#   bash tests/deb/check-deb.sh syncd_VERSION_ARCH.deb
#
# As root (debootstrap, chroot); needs debootstrap, lintian, systemd (for
# systemctl) and the network for Debian's packages (SYNCD_DEB_MIRROR replaces
# debootstrap's default mirror).  Every check prints a line; the first that
# fails stops the script with exit 1.
set -euo pipefail

[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 SYNCD_DEB" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (debootstrap, chroot)" >&2; exit 2; }
src=$(cd "$(dirname "$0")/../.." && pwd)
deb_name=$(basename "$1")
version=$(dpkg-deb -f "$1" Version)

work=$(mktemp -d "${TMPDIR:-/tmp}/syncd-deb.XXXXXX")
root=$work/root
cleanup() {
    if mountpoint -q "$root/proc"; then umount -l "$root/proc"; fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
chmod 0755 "$work"
cp "$1" "$work/$deb_name"
chmod 0644 "$work/$deb_name"
deb=$work/$deb_name

passed=0
ok() { passed=$((passed + 1)); echo "check-deb: ok: $*"; }
fail() {
    echo "check-deb: FAIL: $*" >&2
    echo "check-deb: $passed passed, 1 failed"
    exit 1
}
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
# the paths under ROOT whose name says syncd, and all in /etc/syncd and
# /var/lib/syncd, as seen from inside it (dpkg's own records aside)
syncd_paths() {
    find "$root" \( -path "$root/proc" -o -path "$root/tmp" -o -path "$root/var/lib/dpkg" \) -prune -o \
        \( -name '*syncd*' -o -path "$root/etc/syncd/*" -o -path "$root/var/lib/syncd/*" \) -printf '/%P\n' |
        LC_ALL=C sort
}

# --- the package itself ------------------------------------------------------
# as nobody: lintian unpacks what it checks, and says so when run as root
if ! lint=$(cd "$work" && runuser -u nobody -- lintian --fail-on error "$deb" 2>&1); then
    printf '%s\n' "$lint" >&2
    fail "lintian reports errors"
fi
[ -z "$lint" ] || printf '%s\n' "$lint" | sed 's/^/    /'
ok "lintian: no error ($(printf '%s\n' "$lint" | grep -c '^W:' || true) warnings)"

depends=$(dpkg-deb -f "$deb" Depends)
python_tie="python3 (<< $(/usr/bin/python3 -c 'import sys; print(sys.version_info[0], sys.version_info[1] + 1, sep=".")'))"
case "$depends" in
    *"$python_tie"*) ok "Depends ties the package to its Python: $depends" ;;
    *) fail "Depends names no $python_tie: $depends" ;;
esac

# --- a fresh Debian, and apt-get install ./syncd_*.deb ------------------------
. /etc/os-release
started=$SECONDS
if ! debootstrap --variant=minbase "$VERSION_CODENAME" "$root" ${SYNCD_DEB_MIRROR:+"$SYNCD_DEB_MIRROR"} \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    fail "debootstrap $VERSION_CODENAME"
fi
ok "debootstrap --variant=minbase $VERSION_CODENAME ($((SECONDS - started)) s)"
mount -t proc proc "$root/proc"
# as in any chroot: maintainer scripts start no service here
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
before=$(syncd_paths)

cp "$deb" "$root/tmp/"
started=$SECONDS
in_root apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get update in the chroot"; }
# no Recommends (openssh-client, tinc): the Depends alone must make it run;
# man-db for `man syncd`
if ! in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "/tmp/$deb_name" man-db >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    fail "apt-get install ./$deb_name"
fi
ok "apt-get install ./$deb_name man-db ($((SECONDS - started)) s)"

# --- what it installed ---------------------------------------------------------
got=$(in_root syncd --version) || fail "syncd --version"
[ "$got" = "syncd $version" ] || fail "syncd --version says '$got', the package is $version"
ok "syncd --version: $got"

in_root man -w syncd >/dev/null || fail "man -w syncd finds no page"
page=$(in_root env MANPAGER=cat MANWIDTH=100 man syncd 2>&1) || fail "man syncd: $page"
for command in check sync run status log verify add-node; do
    grep -q "syncd $command " <<<"$page" || fail "man syncd does not describe 'syncd $command'"
done
ok "man syncd: $(wc -l <<<"$page") lines, every command"

[ "$(in_root bash -c 'source /usr/share/bash-completion/completions/syncd && complete -p syncd')" = \
    "complete -F _syncd syncd" ] || fail "the bash completion does not load"
head -n 1 "$root/usr/share/zsh/vendor-completions/_syncd" | grep -qx '#compdef syncd' ||
    fail "no zsh completion in /usr/share/zsh/vendor-completions"
ok "bash and zsh completions"

# the commands the units run are where the package put them
for unit in syncd@.service syncd-run@.service syncd@.timer; do
    [ -f "$root/lib/systemd/system/$unit" ] || fail "no /lib/systemd/system/$unit"
done
grep -h '^ExecStart=' "$root"/lib/systemd/system/syncd*@.service | while read -r line; do
    command=${line#ExecStart=}
    command=${command%% *}
    [ "$command" = /usr/bin/syncd ] && in_root test -x "$command" || fail "$line: not /usr/bin/syncd"
done
ok "units in /lib/systemd/system run /usr/bin/syncd"

# the environment works on a bare Debian: syncd checks the example network
# (keys parsed by cryptography, policy read by PyYAML)
cp -r "$src/examples/repo" "$root/tmp/repo"
in_root syncd check /tmp/repo >"$work/check.out" 2>&1 || { cat "$work/check.out" >&2; fail "syncd check examples/repo"; }
ok "syncd check examples/repo: $(tail -n 1 "$work/check.out")"

[ -n "$(find "$root/opt/syncd" -name '*.pyc' -print -quit)" ] || fail "the postinst compiled no byte-code"
ok "byte-code compiled by the postinst"

conffiles=$(in_root dpkg-query -W -f='${Conffiles}' syncd)
grep -q '^ /etc/syncd/inet6.yaml.example ' <<<"$conffiles" || fail "conffiles: $conffiles"
ok "conffile /etc/syncd/inet6.yaml.example"

wanted=$(find "$root/etc/systemd" -name 'syncd*' 2>/dev/null || true)
[ -z "$wanted" ] || fail "the install enabled something: $wanted"
ok "nothing enabled on install"
systemctl --root="$root" enable syncd@inet6.timer syncd-run@office.service >/dev/null 2>&1 ||
    fail "systemctl --root enable syncd@inet6.timer syncd-run@office.service"
[ "$(readlink "$root/etc/systemd/system/timers.target.wants/syncd@inet6.timer")" = /lib/systemd/system/syncd@.timer ] ||
    fail "systemctl --root enable made no timers.target.wants/syncd@inet6.timer"
[ -L "$root/etc/systemd/system/multi-user.target.wants/syncd-run@office.service" ] ||
    fail "systemctl --root enable made no multi-user.target.wants/syncd-run@office.service"
ok "systemctl --root enable syncd@inet6.timer syncd-run@office.service"

# --- the admin's files, an upgrade in place --------------------------------------
cp "$root/etc/syncd/inet6.yaml.example" "$root/etc/syncd/inet6.yaml"
echo "# the admin's edit" >>"$root/etc/syncd/inet6.yaml.example"
mkdir -p "$root/var/lib/syncd/inet6" && echo state >"$root/var/lib/syncd/inet6/health.json"
in_root dpkg -i "/tmp/$deb_name" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i over the installed package"; }
grep -q "the admin's edit" "$root/etc/syncd/inet6.yaml.example" || fail "the upgrade replaced the admin's conffile"
[ "$(in_root syncd --version)" = "syncd $version" ] || fail "syncd --version after the upgrade"
ok "an upgrade in place keeps the edited conffile and runs"

# --- dpkg -r, then dpkg -P ---------------------------------------------------
in_root dpkg -r syncd >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r syncd"; }
[ "$(in_root dpkg-query -W -f='${db:Status-Abbrev}' syncd)" = "rc " ] || fail "after dpkg -r: not in state rc"
left=$(comm -13 <(printf '%s\n' "$before") <(syncd_paths))
expected="/etc/syncd
/etc/syncd/inet6.yaml
/etc/syncd/inet6.yaml.example
/etc/systemd/system/multi-user.target.wants/syncd-run@office.service
/etc/systemd/system/timers.target.wants/syncd@inet6.timer
/var/lib/syncd
/var/lib/syncd/inet6
/var/lib/syncd/inet6/health.json"
[ "$left" = "$expected" ] || fail "after dpkg -r, expected only config and state, found:
$left"
[ ! -e "$root/opt/syncd" ] || fail "after dpkg -r: /opt/syncd is left: $(find "$root/opt/syncd" | head)"
ok "dpkg -r leaves the config files, the admin's files, the state and the enabled links"

in_root dpkg -P syncd >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -P syncd"; }
left=$(comm -13 <(printf '%s\n' "$before") <(syncd_paths))
expected="/etc/syncd
/etc/syncd/inet6.yaml"
[ "$left" = "$expected" ] || fail "after dpkg -P, expected only the admin's own config, found:
$left"
status=$(in_root dpkg-query -W -f='${db:Status-Abbrev}' syncd 2>/dev/null || true)
case $status in "" | "un "* | "pn "*) ;; *) fail "after dpkg -P: dpkg says '$status'" ;; esac
ok "dpkg -P removes the conffile, the state and the enabled links; the admin's own config stays"

echo "check-deb: $passed passed, 0 failed"
