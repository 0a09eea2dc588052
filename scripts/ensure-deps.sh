#!/usr/bin/env bash
# Installs what preftune needs on a fresh Debian/Ubuntu machine that has only
# the Swift toolchain: the SQLite, OpenBLAS, oneDNN and libpq development packages; and,
# for the tests, Debian's postgresql server (the PostgreSQL store's tests start
# one), curl, and python3 with numpy, safetensors, openai, schemathesis and
# prometheus_client (the interoperability and API tests).
# Installs only what is missing; says what to do where it cannot.
set -euo pipefail

want_python=${1:-}   # "python" when the caller runs tests that need it

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "preftune: need root to run: $*" >&2
    echo "preftune: run it as root (or install sudo) and try again." >&2
    exit 1
  fi
}

# True when at least one path matches the glob.
exists() { compgen -G "$1" >/dev/null; }

missing=()
[ -f /usr/include/sqlite3.h ] || missing+=(libsqlite3-dev)
if ! { exists "/usr/include/cblas.h" || exists "/usr/include/*/cblas.h"; } \
   || ! { exists "/usr/lib/*/libopenblas.so" || exists "/usr/lib/libopenblas.so"; }; then
  missing+=(libopenblas-dev)
fi
[ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || missing+=(libdnnl-dev)
if [ "$want_python" = python ]; then
  # The PostgreSQL store's tests start a real server (initdb into a temporary directory).
  exists "/usr/lib/postgresql/*/bin/initdb" || missing+=(postgresql)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
  command -v python3 >/dev/null 2>&1 || missing+=(python3-pip)
  # The log-following tests read streams as they arrive with curl.
  command -v curl >/dev/null 2>&1 || missing+=(curl)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "preftune: missing ${missing[*]} and this is not a Debian-like system (no apt-get)." >&2
    echo "preftune: install SQLite, OpenBLAS (CBLAS), oneDNN and libpq development files with your package manager." >&2
    exit 1
  fi
  echo "preftune: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python_packages="numpy safetensors openai schemathesis prometheus_client"
if [ "$want_python" = python ] && ! { python3 -c "import numpy, safetensors, openai, prometheus_client" >/dev/null 2>&1 && command -v schemathesis >/dev/null 2>&1; }; then
  echo "preftune: installing $python_packages for python3"
  # Debian 12 marks its python as externally managed (PEP 668); these packages
  # are test-only (interoperability tests), so install them either way.
  python3 -m pip install --quiet --disable-pip-version-check $python_packages 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages $python_packages
  python3 -c "import numpy, safetensors, openai, prometheus_client" && command -v schemathesis >/dev/null \
    || { echo "preftune: $python_packages did not install (is pip's bin directory on PATH?)" >&2; exit 1; }
fi
