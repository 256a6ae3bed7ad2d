"""The front-end files vendored from npm (services/gateway/web/vendor.py) are the ones the
manifest names, byte for byte, each with its licence, and htmx is 2.0.x."""

from __future__ import annotations

import hashlib
import json
import re

from services.gateway.web.vendor import MANIFEST, VENDOR, scripts

FILES = json.loads(MANIFEST.read_text())["files"]


def test_every_file_matches_its_checksum():
    assert FILES
    for name, entry in FILES.items():
        data = (VENDOR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert entry["integrity"].startswith("sha512-"), name
        assert entry["version"] in name or entry["kind"] == "license", name


def test_nothing_unlisted_in_the_folder():
    on_disk = {path.name for path in VENDOR.iterdir()} - {MANIFEST.name}
    assert on_disk == set(FILES)


def test_every_package_has_its_licence():
    packages = {(entry["package"], entry["version"]) for entry in FILES.values()}
    for package, version in packages:
        licences = [name for name, entry in FILES.items() if entry["kind"] == "license"
                    and (entry["package"], entry["version"]) == (package, version)]
        assert len(licences) == 1, f"{package}@{version}: licence files {licences}"
        text = (VENDOR / licences[0]).read_text()
        assert "Permission" in text and len(text) > 200, licences[0]


def test_htmx_is_2_0_x_and_alpine_3_x():
    assert re.fullmatch(r"2\.0\.\d+", FILES[scripts()["htmx"]]["version"])
    assert re.fullmatch(r"3\.\d+\.\d+", FILES[scripts()["alpine"]]["version"])


def test_the_version_inside_each_script_is_the_manifest_s():
    # both builds carry it as `version:"2.0.11"` (htmx.version, Alpine.version)
    for name in scripts().values():
        inside = re.findall(r'version:"([^"]+)"', (VENDOR / name).read_text())
        assert inside == [FILES[name]["version"]], name
