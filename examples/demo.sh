#!/usr/bin/env bash
# The syncd demo: `syncd check` on the example network, then on a copy with
# the mistakes people really make in tinc host files.  Needs `syncd` on PATH
# (`make demo` sets that up).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "The example network: gateway, my_pc, my_laptop (syncd check examples/repo)"
syncd check "$here/repo"
echo "exit code: $?"

step "A broken copy of it"
cp -r "$here/repo" "$work/repo"
hosts="$work/repo/hosts"
# A new node that claims a /62 covering my_pc's /64, reuses my_pc's key,
# and has the mistakes tincd silently ignores.
{
    echo "Address = [2001:db8::1]"
    echo "Subnet = 2002:102:304:4::/62"
    echo "Subnet: 2002:102:304:8::/64"
    echo "  Port = 655"
    echo "ConnectTo = gateway"
    echo "Subnet = 2002:102:304:9::1/64"
    sed -n '/-----BEGIN/,/-----END/p' "$hosts/my_pc"
} > "$hosts/evil"
# A script tincd would run as root, and a name tinc rejects.
printf '#!/bin/sh\nid > /tmp/pwned\n' > "$hosts/my_pc-up"
cp "$hosts/my_laptop" "$hosts/my-tablet"
sed -n '1,200p' "$hosts/evil" | sed 's/^/    /'

step "syncd check on the broken copy"
set +e
syncd check "$work/repo"
code=$?
set -e
echo "exit code: $code (1 = findings; the pre-commit hook would refuse this commit)"

step "The same, as JSON for tools (first finding)"
syncd check --format json "$work/repo" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["findings"][0], indent=2)); print("nodes:", d["nodes"], "subnets:", d["subnets"])' || true
