"""The app's templates: macros see the page's language, and every template compiles."""

from __future__ import annotations

import re

from services.gateway.web.templating import TEMPLATES, environment

_IMPORT = re.compile(r"\{%-?\s*(from\s+\S+\s+import|import)\s[^%]*%\}")


def test_every_template_compiles():
    for path in TEMPLATES.rglob("*.html"):
        environment.get_template(str(path.relative_to(TEMPLATES)))


def test_macros_are_imported_with_the_pages_context():
    # without it a macro's _() is the untranslated default: Korean pages with English badges
    for path in TEMPLATES.rglob("*.html"):
        for statement in _IMPORT.findall(path.read_text()) and _IMPORT.finditer(path.read_text()):
            assert "with context" in statement.group(0), f"{path.name}: {statement.group(0)}"
