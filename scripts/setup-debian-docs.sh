#!/usr/bin/env bash
# Install the Debian packages whose translated documentation `phasescope corpus build --from debian-docs`
# reads (GNOME help, manual pages, the Debian Reference in phasescope's languages), where apt exists.
set -euo pipefail
packages=(gnome-user-docs manpages manpages-de manpages-es manpages-fr manpages-ja manpages-ru manpages-tr manpages-zh
          debian-reference-en debian-reference-de debian-reference-es debian-reference-fr debian-reference-ja
          debian-reference-zh-cn)
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-debian-docs: no apt-get here; install these Debian packages another way: ${packages[*]}" >&2
  exit 1
fi
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup-debian-docs: installing ${missing[*]}" >&2
# Docker images often exclude /usr/share/man and /usr/share/doc from packages: the documentation is the point here
for file in /etc/dpkg/dpkg.cfg.d/*; do
  [ -f "$file" ] && grep -q "^path-exclude.*/usr/share/\(man\|help\)" "$file" && \
    echo "setup-debian-docs: $file excludes documentation from packages; remove those path-exclude lines" >&2
done
{ $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       --no-install-recommends "${missing[@]}"; }; } >/dev/null
