#!/usr/bin/env bash
# The syncd demo, no root needed: a throwaway admin key signs the example
# network into a git repository, and a "node" living in ./demo syncs it into
# demo/etc/tinc/inet6/hosts.  Then an admin adds a node with a signed commit,
# and a stranger pushes an unsigned one.  `make demo` runs it with syncd on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
demo="$(pwd)/demo"
rm -rf "$demo"
mkdir -p "$demo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=admin GIT_AUTHOR_EMAIL=admin@example.org
export GIT_COMMITTER_NAME=admin GIT_COMMITTER_EMAIL=admin@example.org
sign=(-c gpg.format=ssh -c "user.signingkey=$demo/admin_key")

step "A throwaway admin signing key, pinned in allowed_signers"
ssh-keygen -q -t ed25519 -N "" -C admin@example.org -f "$demo/admin_key"
echo "admin@example.org namespaces=\"git\" $(cut -d' ' -f1,2 "$demo/admin_key.pub")" > "$demo/allowed_signers"
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

step "The node my_pc: its syncd config"
cat > "$demo/inet6.yaml" <<YAML
net: inet6
node: my_pc
repo: {url: "$demo/hosts-repo", branch: main}
trust: {allowed_signers: "$demo/allowed_signers"}
tinc: {dir: "$demo/etc/tinc/inet6", reload: none}
state_dir: "$demo/state"
YAML
cat "$demo/inet6.yaml"

step "First sync"
run syncd sync -c "$demo/inet6.yaml"
ls -l --time-style=+%T "$demo/etc/tinc/inet6/hosts"

step "An admin adds the node 'newbie' with a signed commit"
ssh-keygen -q -t rsa -b 2048 -N "" -f "$demo/newbie_key"
{
    echo "Subnet = 2002:102:304:6::/64"
    echo
    ssh-keygen -e -m PEM -f "$demo/newbie_key.pub"
} > "$demo/hosts-repo/hosts/newbie"
git -C "$demo/hosts-repo" add -A
git -C "$demo/hosts-repo" "${sign[@]}" commit -q -S -m "Add newbie"
sleep 1  # so that an unchanged file would show a new mtime if it were rewritten
run syncd sync -c "$demo/inet6.yaml" --dry-run
run syncd sync -c "$demo/inet6.yaml"
echo "only newbie is new; the other files keep their mtime (tincd keeps those peers connected):"
ls -l --time-style=+%T "$demo/etc/tinc/inet6/hosts"

step "Someone pushes an unsigned commit claiming newbie's subnet"
echo "Subnet = 2002:102:304:6::/64" > "$demo/hosts-repo/hosts/evil"
git -C "$demo/hosts-repo" add -A
git -C "$demo/hosts-repo" commit -q --no-gpg-sign -m "totally legit"
set +e
run syncd sync -c "$demo/inet6.yaml"
code=$?
set -e
echo "exit code: $code (1 = refused; nothing on the node changed)"
ls "$demo/etc/tinc/inet6/hosts"

step "What the node knows"
run syncd status -c "$demo/inet6.yaml"
