"""What browser tests call on a page: `await assert_accessible(page, "sequence list")` and
`await screenshot(page, "sequence-list")`. Both take Playwright's async Page (see conftest.py
for why the async API)."""

from __future__ import annotations

import re
from pathlib import Path

from axe_playwright_python.async_playwright import Axe

REPO = Path(__file__).resolve().parents[2]
# the README shows screens from here; commit the files when a screen changes
SCREENSHOTS = REPO / "docs" / "screenshots"
FAILING_IMPACTS = ("serious", "critical")

_axe = Axe()  # axe-core's script, bundled with the package: no network


async def assert_accessible(page, name: str) -> None:
    """Run axe-core on the page as it is now; fail listing every violation of impact serious or
    critical, with the nodes it was found on. Moderate and minor ones are not failures."""
    results = await _axe.run(page)
    failing = [v for v in results.response["violations"] if v["impact"] in FAILING_IMPACTS]
    if not failing:
        return
    lines = [f"{name}: {len(failing)} accessibility violation(s) of impact serious or critical"
             f" ({page.url})"]
    for violation in failing:
        lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']}"
                     f" [{violation['helpUrl']}]")
        for node in violation["nodes"]:
            lines.append(f"    at {' '.join(map(str, node['target']))}: {node['html'][:120]}")
    raise AssertionError("\n".join(lines))


async def screenshot(page, name: str, directory: Path = SCREENSHOTS) -> Path:
    """The whole page (not only the viewport) as `docs/screenshots/<name>.png`, written on every
    run; returns the path."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise ValueError(f"screenshot name {name!r}: lower-case letters, digits, '.', '_', '-'")
    path = directory / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=path, full_page=True, animations="disabled")
    return path
