#!/usr/bin/env bash
# Install the Debian packages whose translated documentation `phasescope corpus build --from debian-docs`
# reads (GNOME help, manual pages, the Debian Reference in phasescope's languages), where apt exists.
#   bash scripts/setup-debian-docs.sh                      # install them
#   bash scripts/setup-debian-docs.sh --libreoffice DIR    # also unpack the LibreOffice help into DIR
# The libreoffice-help-* packages depend on the whole office suite (about 200 packages), which reading the
# help does not need: they are downloaded and unpacked into DIR, read with `corpus build --root / --root DIR`.
set -euo pipefail
libreoffice=""
if [ "${1:-}" = "--libreoffice" ]; then
  [ -n "${2:-}" ] || { echo "setup-debian-docs: --libreoffice needs a folder" >&2; exit 2; }
  libreoffice="$2"
elif [ -n "${1:-}" ]; then
  echo "setup-debian-docs: unknown argument ${1}; expected --libreoffice DIR or nothing" >&2; exit 2
fi
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
unpack_libreoffice() {
  [ -n "$libreoffice" ] || return 0
  [ -d "$libreoffice/usr/share/libreoffice/help/en-US" ] && return 0
  local debs; debs="$(mktemp -d)"
  local help=(libreoffice-help-en-us libreoffice-help-de libreoffice-help-fr libreoffice-help-es libreoffice-help-tr
              libreoffice-help-ru libreoffice-help-ja libreoffice-help-zh-cn)
  echo "setup-debian-docs: unpacking ${help[*]} into $libreoffice" >&2
  (cd "$debs" && { apt-get download -qq "${help[@]}" 2>/dev/null \
     || { $sudo apt-get update -qq && apt-get download -qq "${help[@]}"; }; })
  mkdir -p "$libreoffice"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$libreoffice"; done
  rm -rf "$debs"
}
if [ ${#missing[@]} -eq 0 ]; then unpack_libreoffice; exit 0; fi
echo "setup-debian-docs: installing ${missing[*]}" >&2
# Docker images often exclude /usr/share/man and /usr/share/doc from packages: the documentation is the point here
for file in /etc/dpkg/dpkg.cfg.d/*; do
  [ -f "$file" ] && grep -q "^path-exclude.*/usr/share/\(man\|help\)" "$file" && \
    echo "setup-debian-docs: $file excludes documentation from packages; remove those path-exclude lines" >&2
done
{ $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       --no-install-recommends "${missing[@]}"; }; } >/dev/null
unpack_libreoffice
