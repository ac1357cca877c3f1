#!/usr/bin/env bash
# Gives the site's stylesheet its fingerprinted name and precompressed variants, after an edit:
#   bash webapp/fingerprint.sh path/to/site.css
# It writes static/assets/site.HASH.css (HASH: the first 8 hex digits of its SHA-256) with .gz and
# .br beside it, removes the old ones, and points pages::STYLESHEET at the new name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source=$1
hash=$(sha256sum "$source" | cut -c1-8)
name="site.$hash.css"
tmp=$(mktemp); cp "$source" "$tmp"
rm -f "$here"/static/assets/site.*.css "$here"/static/assets/site.*.css.gz "$here"/static/assets/site.*.css.br
mv "$tmp" "$here/static/assets/$name"; chmod 0644 "$here/static/assets/$name"
gzip -9 -n -k "$here/static/assets/$name"
brotli -q 11 -k "$here/static/assets/$name"
sed -i "s|^pub const STYLESHEET: &str = \"/assets/site\.[^\"]*\.css\";|pub const STYLESHEET: \&str = \"/assets/$name\";|" \
  "$here/src/pages.rs"
echo "assets/$name (+ .gz, .br); pages::STYLESHEET updated"
