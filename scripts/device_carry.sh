#!/usr/bin/env bash
# Build what the GPU box needs that it lacks (docs/benchmarks.md, "Machines"): its Python is 3.12 with torch, NumPy,
# OpenCV, Pillow, safetensors, typer and rich, but no PyAV, pydantic, c2pa or the service's packages, and no network.
# Writes, under .device/ (git-ignored): core312.tar.xz (PyAV, pydantic, c2pa, cryptography: what every job imports),
# serve312.tar.xz (FastAPI and the rest of the `serve` extra: the :sync load test), setup.sh (unpacks both, puts
# them on PYTHONPATH, adds py-spy when its wheel is there) and the py-spy wheel. Every device script then starts with
# `. .device/setup.sh` and names these files in the call's `carry` (the working tree and the carried files must stay
# under 64 MiB together: the shared libraries are stripped, which takes PyAV and c2pa from 232 to 180 MB unpacked).
#
#     bash scripts/device_carry.sh          # needs pip access to PyPI (this machine's registries), xz and strip
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
grep -qx '/.device/' .gitignore || echo "warning: .device/ is not in .gitignore" >&2

download() {  # cp312 manylinux wheels, no dependencies (each needed one is named)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
# versions as the dev VM resolves them; PyAV pinned to the one the project's install gets there (aiortc holds it)
av_version=${AV_VERSION:-$(python3 -c 'import av; print(av.__version__)' 2>/dev/null || echo 18.1.0)}
download "$tmp/core" "av==$av_version" pydantic pydantic-core annotated-types \
  typing-inspection c2pa-python cryptography cffi
download "$tmp/serve" fastapi starlette uvicorn python-multipart pydantic-settings python-dotenv sqlalchemy greenlet \
  alembic mako pyjwt asgi-lifespan opentelemetry-api  # FastAPI 0.165 imports opentelemetry
download "$out" py-spy

for part in core serve; do
  dest="$tmp/site312${part:0:1}"  # site312c, site312s: the names setup.sh puts on PYTHONPATH
  mkdir -p "$dest"
  for wheel in "$tmp/$part"/*.whl; do python3 -m zipfile -e "$wheel" "$dest/"; done
  find "$dest" -name '*.so*' -type f -exec strip --strip-unneeded {} \;
  tar cf - -C "$tmp" "$(basename "$dest")" | xz -9 -T2 > "$out/${part}312.tar.xz"
done

cat > "$out/setup.sh" <<'SETUP'
# sourced at the top of every device script (made by scripts/device_carry.sh)
set -u
export PYTHONUNBUFFERED=1
for t in .device/core312.tar.xz .device/serve312.tar.xz; do [ -f $t ] && tar xJf $t -C /tmp; done
export PYTHONPATH=/tmp/site312c:/tmp/site312s:$PWD
if ls .device/py_spy-*.whl >/dev/null 2>&1; then
  python3 -m zipfile -e .device/py_spy-*.whl /tmp/spy >/dev/null && chmod +x /tmp/spy/py_spy-*.data/scripts/py-spy
  PATH=$(echo /tmp/spy/py_spy-*.data/scripts):$PATH
  export PATH
fi
mkdir -p "$OUT/r"
echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); $(nproc) cores"
python3 -c "import av, pydantic, c2pa, torch; print('av', av.__version__, 'torch', torch.__version__)"
SETUP
ls -la "$out"
echo "carry: .device/core312.tar.xz .device/serve312.tar.xz .device/setup.sh (+ .device/py_spy-*.whl to profile)"
