"""`graph-gateway demo`: a faulty 1-50-1 job ends with exactly its entities, all on record."""

from __future__ import annotations

from gateway.demo import run_demo


async def test_the_demo_job_ends_with_exactly_50_ad_sets_and_50_ads_all_on_record() -> None:
    """Faults fail and lose some copies; the gateway looks them up and re-sends only what did
    not happen, so the backend sees only successes and the job ends exactly at 50/50.

    It also covers a lost deep copy's child slot sharing its number with the ad set's slot.
    """
    lines: list[str] = []
    code = await run_demo(seed=7, database_url=None, say=lines.append)
    text = "".join(f"{line}\n" for line in lines)
    assert code == 0, text
    saw = next(line for line in lines if "the backend saw" in line)
    assert "Graph code" not in saw, text  # every fault was absorbed by the gateway
    assert "outcome_unknown" not in saw, text
    absorbed = next(line for line in lines if "the gateway" in line and "fault(s)" in line)
    assert "looked up" in absorbed, text  # the faults did hit, and were looked up
    assert "job completed: ad 50/50, adset 50/50, campaign 1/1" in text
    assert "exactly 50 ad sets and 50 ads, as asked" in text
    assert "every entity on Graph has a `created` row" in text
