#!/bin/sh
# Rebuild the Swagger UI that GET /docs serves, from npm: a pinned swagger-ui-dist, checked against
# its published integrity, and only the files the page loads, with the package's licence beside them.
# Run from anywhere; needs npm, tar, openssl and base64. Change VERSION and INTEGRITY together
# (`npm view swagger-ui-dist@VERSION dist.integrity`).
set -eu

VERSION=5.35.0
INTEGRITY=sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
FILES="swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE NOTICE"

root=$(cd "$(dirname "$0")/.." && pwd)
target="$root/service/http/static/docs/swagger-ui"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null
tarball="swagger-ui-dist-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
    echo "vendor-swagger-ui: $tarball has integrity $actual, expected $INTEGRITY" >&2
    exit 1
fi
tar -xzf "$tarball"

rm -rf "$target"
mkdir -p "$target"
for name in $FILES; do
    cp "package/$name" "$target/$name"
done
echo "swagger-ui-dist $VERSION ($INTEGRITY), from npm by scripts/vendor-swagger-ui.sh" > "$target/VERSION"
echo "vendored swagger-ui-dist $VERSION into $target"
