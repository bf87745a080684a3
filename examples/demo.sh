#!/usr/bin/env bash
# The syncd demo, no root needed: a throwaway admin key signs the example
# network into a git repository, and a "node" living in ./demo syncs it into
# demo/etc/tinc/inet6/hosts.  Then an admin adds a node with a signed commit,
# and a stranger pushes an unsigned one.  `make demo` runs it with syncd on PATH.
#
# It checks every claim it prints: it exits 0 only when each step went as it
# says (the refusal it shows is expected, and checked, to exit 1).
set -euo pipefail
umask 022 # syncd refuses a config or allowed_signers file that group or others may write
here="$(cd "$(dirname "$0")" && pwd)"
demo="$(pwd)/demo"
rm -rf "$demo"
mkdir -p "$demo"
hosts="$demo/etc/tinc/inet6/hosts"

bold() { if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { printf '\n'; bold "== $*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# What the demo says happened, checked: a false claim ends it with exit 1.
fail() {
    printf 'demo: FAILED: %s\n' "$*" >&2
    exit 1
}
# name, size and mtime (ns) of every file in the hosts directory
listing() { (cd "$hosts" && find . -maxdepth 1 -type f -printf '%f %s %T@\n' | sort); }

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=admin GIT_AUTHOR_EMAIL=admin@example.org
export GIT_COMMITTER_NAME=admin GIT_COMMITTER_EMAIL=admin@example.org
sign=(-c gpg.format=ssh -c "user.signingkey=$demo/admin_key")
config="$demo/inet6.yaml"

step "A throwaway admin signing key, pinned in allowed_signers"
ssh-keygen -q -t ed25519 -N "" -C admin@example.org -f "$demo/admin_key"
echo "admin@example.org namespaces=\"git\" $(cut -d' ' -f1,2 "$demo/admin_key.pub")" >"$demo/allowed_signers"
cat "$demo/allowed_signers"

step "examples/repo becomes a signed git repository (the 'server')"
cp -r "$here/repo" "$demo/hosts-repo"
git -C "$demo/hosts-repo" init -q -b main
git -C "$demo/hosts-repo" add -A
git -C "$demo/hosts-repo" "${sign[@]}" commit -q -S -m "The IPv6-everywhere network: gateway, my_pc, my_laptop"
echo "git itself agrees the commit is signed by an allowed signer:"
git -C "$demo/hosts-repo" -c "gpg.ssh.allowedSignersFile=$demo/allowed_signers" \
    log --show-signature -1 --format='%h %s' 2>&1 | sed 's/^/    /'
run syncd check "$demo/hosts-repo"

step "The node my_pc: its tinc directory and its syncd config"
# What the node already has, as after `syncd add-node my_pc` (or by hand):
# the network's tinc directory with tinc.conf naming this node.
mkdir -p "$demo/etc/tinc/inet6"
printf 'Name = my_pc\nConnectTo = gateway\nStrictSubnets = yes\n' >"$demo/etc/tinc/inet6/tinc.conf"
echo "$demo/etc/tinc/inet6/tinc.conf:"
sed 's/^/    /' "$demo/etc/tinc/inet6/tinc.conf"
cat >"$config" <<YAML
net: inet6
node: my_pc
repo: {url: "$demo/hosts-repo", branch: main}
trust: {allowed_signers: "$demo/allowed_signers", max_age: 14d}
tinc: {dir: "$demo/etc/tinc/inet6", reload: none}
state_dir: "$demo/state"
interval: 5m
YAML
echo "$config:"
sed 's/^/    /' "$config"

step "First sync: every host file, verified, into $hosts"
run syncd sync -c "$config"
ls -l --time-style=+%T "$hosts"
[ "$(ls "$hosts" | tr '\n' ' ')" = "gateway my_laptop my_pc " ] || fail "the first sync did not install the three host files"

step "An admin adds the node 'newbie' with a signed commit"
ssh-keygen -q -t rsa -b 2048 -N "" -f "$demo/newbie_key"
{
    echo "Subnet = 2002:102:304:6::/64"
    echo
    ssh-keygen -e -m PEM -f "$demo/newbie_key.pub"
} >"$demo/hosts-repo/hosts/newbie"
git -C "$demo/hosts-repo" add -A
git -C "$demo/hosts-repo" "${sign[@]}" commit -q -S -m "Add newbie"
before="$(listing)"
sleep 1 # so that an unchanged file would show a new mtime if it were rewritten
run syncd sync -c "$config" --dry-run
[ "$(listing)" = "$before" ] || fail "--dry-run changed the hosts directory"
run syncd sync -c "$config"
echo "only newbie is new; the other files keep their mtime (tincd keeps those peers connected):"
ls -l --time-style=+%T "$hosts"
[ "$(listing | grep -v '^newbie ')" = "$before" ] || fail "a host file other than newbie was rewritten"
cmp -s "$hosts/newbie" "$demo/hosts-repo/hosts/newbie" || fail "newbie was not installed as signed"

step "Someone pushes an unsigned commit claiming newbie's subnet"
echo "Subnet = 2002:102:304:6::/64" >"$demo/hosts-repo/hosts/evil"
git -C "$demo/hosts-repo" add -A
git -C "$demo/hosts-repo" commit -q --no-gpg-sign -m "totally legit"
before="$(listing)"
code=0
run syncd sync -c "$config" || code=$?
echo "exit code: $code (1 = refused: nothing on the node changed)"
[ "$code" = 1 ] || fail "the unsigned commit was not refused with exit 1 (exit $code)"
[ "$(listing)" = "$before" ] || fail "the refused pass changed the hosts directory"
ls "$hosts"

step "What the node knows"
code=0
run syncd status -c "$config" || code=$?
echo "exit code: $code (1 = not healthy: the last pass was refused, as a monitoring check should say)"
[ "$code" = 1 ] || fail "syncd status did not report the refused pass (exit $code)"
run syncd log -c "$config"
[ "$(syncd log -c "$config" --format json | wc -l)" = 2 ] || fail "syncd log does not list the two applied commits"

step "Done: every step above went as it says"
echo "Everything lives in $demo; run 'make demo' again to start over."
