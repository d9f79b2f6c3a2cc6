#!/bin/sh
# Runs inside `docker build` of the git-harness verifier image: installs the wheels downloaded
# on the host (pure-Python ones: unpacked, as pip would install them) and the uv/uvx/curl
# stand-ins. Nothing here reaches the network.
set -eu
V=/opt/git-harness/verifier
if ! command -v python3 >/dev/null 2>&1; then
    echo "the base image has no python3: build it with \`git harness image base --debootstrap bookworm --include python3\`" >&2
    exit 1
fi
mkdir -p "$V/site"
for w in "$V"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$V/site"
done
rm -rf "$V/wheels"
python3 "$V/run.py" --list > "$V/packages.txt"
for f in uv uvx curl; do
    cp "$V/$f" "/usr/local/bin/$f"
    chmod 0755 "/usr/local/bin/$f"
done
[ -e /usr/local/bin/python ] || ln -s "$(command -v python3)" /usr/local/bin/python
# Where uv's installer puts uv and its `env` file, which TB2's test.sh sources.
mkdir -p /root/.local/bin
cp "$V/env" /root/.local/bin/env
ln -sf /usr/local/bin/uv /root/.local/bin/uv
ln -sf /usr/local/bin/uvx /root/.local/bin/uvx
/usr/local/bin/uvx pytest --version
cat "$V/packages.txt"
