"""The roles table in docs/portal.md is the permission map in the code; the README points at the portal's
documentation and the X-ray board screenshot."""

from __future__ import annotations

from pathlib import Path

from kawa.portal.permissions import PERMISSIONS, Action, Role

ROOT = Path(__file__).resolve().parents[2]


def test_roles_table_matches_the_permission_map() -> None:
    text = (ROOT / "docs" / "portal.md").read_text()
    section = text.split("## Users, roles and what they may do", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| action |") or line.startswith("| `")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    roles = [Role(name) for name in header[1:6]]
    seen = set()
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        action = Action(cells[0].strip("`"))
        seen.add(action)
        for role, cell in zip(roles, cells[1:6], strict=True):
            assert (cell == "✓") == (action in PERMISSIONS[role]), f"docs/portal.md: {role.value} x {action.value}"
    assert seen == set(Action)


def test_readme_links_the_portal_docs_and_screenshot() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/portal.md" in readme and "docs/xray-board.png" in readme
    assert (ROOT / "docs" / "xray-board.png").stat().st_size > 20_000
