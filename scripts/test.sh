#!/usr/bin/env bash
# The whole test suite: sets up .venv (torch==2.13.0 first), lints with ruff, runs pytest.
set -euo pipefail
PHASESCOPE_EXTRAS=test
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The HTML report test opens the page in headless Chromium: Debian's package, installed once.
if command -v apt-get >/dev/null 2>&1; then
  if ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing chromium (for the HTML report test)" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
    } >/dev/null 2>&1 || echo "setup: could not install chromium; the HTML report test will fail" >&2
  fi
  export PHASESCOPE_REQUIRE_CHROMIUM=1  # where it can be installed, a missing browser fails the test
  # The corpus builder is tested once on real translated documentation: the GNOME help (gnome-user-docs)
  if [ ! -d /usr/share/help/C/gnome-help ]; then
    echo "setup: installing gnome-user-docs (for the real-text corpus test)" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnome-user-docs \
      || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends gnome-user-docs; }
    } >/dev/null 2>&1 || echo "setup: could not install gnome-user-docs; the real-text corpus test will fail" >&2
  fi
  export PHASESCOPE_REQUIRE_DEBIAN_DOCS=1
fi
ruff check phasescope tests benchmarks examples
python -m pytest -q "$@"
