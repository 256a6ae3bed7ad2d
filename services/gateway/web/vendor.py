"""The web app's front-end files, vendored from npm: `python -m services.gateway.web.vendor`
fetches the newest version in each package's range below with `npm pack` (pin one with
`python -m services.gateway.web.vendor htmx.org@2.0.11`), checks the tarball against the
registry's `dist.integrity`, copies the files into static/vendor/ and rewrites MANIFEST.json.
tests/unit/test_vendored_assets.py checks the files against that manifest."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).parent / "static" / "vendor"
MANIFEST = VENDOR / "MANIFEST.json"

# package: (version range, short name, the script inside the tarball, its licence file)
PACKAGES = {
    "htmx.org": ("~2.0.0", "htmx", "package/dist/htmx.min.js", "package/LICENSE"),
    "alpinejs": ("^3.0.0", "alpine", "package/dist/cdn.min.js", None),
}

# alpinejs ships no licence file in its npm tarball; this is the LICENSE.md of its repository
# (github.com/alpinejs/alpine), which package.json names as "MIT". The @vue/reactivity code
# bundled into cdn.min.js keeps its own MIT notice at the end of that file.
ALPINE_LICENSE = """\
# MIT License

Copyright © 2019-2021 Caleb Porzio and contributors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scripts() -> dict[str, str]:
    """Short name to file name under static/vendor/, e.g. {"htmx": "htmx-2.0.11.min.js"}, for
    the templates (the file names carry the version, so an upgrade busts browser caches)."""
    files = json.loads(MANIFEST.read_text())["files"]
    return {entry["name"]: name for name, entry in files.items() if entry["kind"] == "script"}


def _npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def fetch(package: str, spec: str, tmp: Path) -> dict[str, dict]:
    """The package's files, by their name under static/vendor/, with their manifest entries."""
    _, short, script, licence = PACKAGES[package]
    packed = json.loads(_npm("pack", "--json", "--pack-destination", str(tmp), spec, cwd=tmp))[0]
    version = packed["version"]
    tarball = (tmp / packed["filename"]).read_bytes()
    integrity = json.loads(_npm("view", "--json", f"{package}@{version}", "dist.integrity", cwd=tmp))
    local = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if local != integrity:
        raise SystemExit(f"{package}@{version}: tarball {local} but the registry says {integrity}")
    common = {"package": package, "version": version, "integrity": integrity, "name": short}
    with tarfile.open(tmp / packed["filename"]) as tar:
        code = tar.extractfile(script).read()
        text = tar.extractfile(licence).read() if licence else ALPINE_LICENSE.encode()
    return {
        f"{short}-{version}.min.js": {**common, "kind": "script", "path": script, "data": code},
        f"{short}.LICENSE": {**common, "kind": "license", "data": text,
                             "path": licence or "(none in the tarball; see vendor.py)"},
    }


def main(argv: list[str]) -> None:
    pins = dict(arg.rsplit("@", 1) for arg in argv)  # e.g. htmx.org@2.0.11
    if unknown := pins.keys() - PACKAGES.keys():
        raise SystemExit(f"not vendored here: {', '.join(sorted(unknown))} (see PACKAGES)")
    old = json.loads(MANIFEST.read_text())["files"] if MANIFEST.exists() else {}
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for package, (version_range, *_) in PACKAGES.items():
            files |= fetch(package, f"{package}@{pins.get(package, version_range)}", Path(tmp))
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name in old.keys() - files.keys():
        (VENDOR / name).unlink(missing_ok=True)
    for name, entry in files.items():
        (VENDOR / name).write_bytes(entry["data"])
        entry["sha256"] = sha256(entry["data"])
    keys = ("package", "version", "path", "sha256", "integrity", "kind", "name")
    MANIFEST.write_text(json.dumps({
        "written_by": "python -m services.gateway.web.vendor (do not edit by hand)",
        "files": {name: {k: files[name][k] for k in keys} for name in sorted(files)},
    }, indent=2, ensure_ascii=False) + "\n")
    for name, entry in sorted(files.items()):
        print(f"{name:28} {entry['package']}@{entry['version']}  sha256 {entry['sha256']}")


if __name__ == "__main__":
    main(sys.argv[1:])
