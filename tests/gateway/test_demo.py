"""`graph-gateway demo` runs a faulty 1-50-1 build and every Graph entity ends up on record."""

from __future__ import annotations

from gateway.demo import run_demo


async def test_the_demo_build_leaves_every_graph_entity_on_record() -> None:
    """Faults hit some copies; the summary shows them and nothing is off the record."""
    lines: list[str] = []
    code = await run_demo(seed=7, database_url=None, say=lines.append)
    text = "".join(f"{line}\n" for line in lines)
    assert code == 0, text
    assert "the backend saw" in text
    assert "the ledger holds" in text
    assert "unknown" in text
    assert "NOT COVERED" not in text
