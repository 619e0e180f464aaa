"""The IdempotencyStore contract (gateway/ports.py), run unchanged against every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import StoreUnavailable
from gateway.model import Claim, Claimed, InProgress, Mismatch, Replay, StoredResponse
from gateway.ports import IdempotencyStore, Ledger
from tests.contract.conftest import IdempotencyStoreFactory

T0 = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(seconds=30)
DAY = timedelta(hours=24)
SCOPE = "c0ffee:act_1"
RESPONSE = StoredResponse(
    201,
    {"content-type": "application/json; charset=UTF-8", "x-fb-trace-id": "Abc"},
    b'{"id":"2385"}\x00\xff',  # bytes come back exactly, also ones that are not UTF-8
)


async def claim(
    store: IdempotencyStore,
    request_id: str = "req-1",
    *,
    key: str = "key-1",
    fingerprint: str = "fp-1",
    scope: str = SCOPE,
    at: datetime = T0,
    lease: timedelta = LEASE,
) -> Claim:
    return await store.claim(scope, key, fingerprint, request_id=request_id, now=at, lease=lease)


async def finish(
    store: IdempotencyStore,
    request_id: str = "req-1",
    *,
    key: str = "key-1",
    response: StoredResponse = RESPONSE,
    scope: str = SCOPE,
    at: datetime = T0,
) -> None:
    await store.finish(
        scope, key, request_id=request_id, response=response, now=at, retain_until=at + DAY
    )


async def warm_up(store: IdempotencyStore) -> None:
    """Claims of unrelated keys at once, so a pooled backend has its connections open and
    the race that follows really runs in parallel."""
    await asyncio.gather(*(claim(store, key=f"warm-{n}") for n in range(20)))


class TestClaim:
    async def test_a_new_key_is_claimed(self, idempotency_store: IdempotencyStore) -> None:
        """The first claim of a key owns it, as a fresh (not recovered) claim."""
        assert await claim(idempotency_store) == Claimed()

    async def test_a_second_claim_while_leased_reports_in_progress(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """A repeat while the first holder's lease runs: InProgress naming holder and lease end."""
        await claim(idempotency_store)
        again = await claim(idempotency_store, "req-2", at=T0 + timedelta(seconds=29))
        assert again == InProgress("req-1", T0 + LEASE)

    async def test_a_finished_key_replays_the_stored_response(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Same key and fingerprint after finish: Replay with status, headers and body bytes."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        assert await claim(idempotency_store, "req-2", at=T0 + DAY / 2) == Replay(RESPONSE)

    async def test_another_request_with_the_same_key_is_a_mismatch_while_in_progress(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """A different fingerprint under a key still in flight is a Mismatch, not InProgress."""
        await claim(idempotency_store)
        assert await claim(idempotency_store, "req-2", fingerprint="fp-2") == Mismatch()

    async def test_another_request_with_the_same_key_is_a_mismatch_after_finish(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """A different fingerprint under a finished key is a Mismatch, never a replay."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        assert await claim(idempotency_store, "req-2", fingerprint="fp-2") == Mismatch()

    async def test_an_expired_lease_is_taken_over(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Once the holder's lease has run out (it crashed), the next claim owns the key,
        told it recovers it and from whom; later claims see the new holder's lease."""
        await claim(idempotency_store)
        later = T0 + LEASE
        assert await claim(idempotency_store, "req-2", at=later) == Claimed(
            recovered=True, previous_request_id="req-1"
        )
        assert await claim(idempotency_store, "req-3", at=later) == InProgress(
            "req-2", later + LEASE
        )

    async def test_a_mismatch_is_reported_even_when_the_lease_has_expired(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """An expired key is not taken over by a different request: Mismatch."""
        await claim(idempotency_store)
        assert (
            await claim(idempotency_store, "req-2", fingerprint="fp-2", at=T0 + 2 * LEASE)
            == Mismatch()
        )

    async def test_a_released_key_can_be_claimed_afresh(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """After release (nothing was sent), the next claim is a fresh one, any fingerprint."""
        await claim(idempotency_store)
        await idempotency_store.release(SCOPE, "key-1", request_id="req-1")
        assert await claim(idempotency_store, "req-2", fingerprint="fp-2") == Claimed()

    async def test_scopes_are_independent(self, idempotency_store: IdempotencyStore) -> None:
        """One key in two scopes (callers or accounts) is two records."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        assert await claim(idempotency_store, "req-2", scope="beef:act_1") == Claimed()
        assert await claim(idempotency_store, "req-3", scope="c0ffee:act_2") == Claimed()
        assert await claim(idempotency_store, "req-4") == Replay(RESPONSE)

    async def test_a_lease_that_is_not_positive_is_refused(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """A zero or negative lease is a bug: ValueError."""
        with pytest.raises(ValueError, match="lease"):
            await claim(idempotency_store, lease=timedelta(0))

    async def test_a_key_over_255_characters_is_refused(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Keys are 1-255 characters (DESIGN.md §3.1): a longer one raises ValueError."""
        assert await claim(idempotency_store, key="k" * 255) == Claimed()
        with pytest.raises(ValueError, match="refused"):
            await claim(idempotency_store, key="k" * 256)


class TestFinish:
    async def test_finish_by_a_non_holder_is_ignored(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Only the holder stores a response: another request's finish leaves it in flight."""
        await claim(idempotency_store)
        await finish(idempotency_store, "req-2")
        assert await claim(idempotency_store, "req-3") == InProgress("req-1", T0 + LEASE)

    async def test_a_holder_whose_key_was_taken_over_cannot_finish(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """The crashed holder's late finish is ignored; the new holder's response is kept."""
        await claim(idempotency_store)
        await claim(idempotency_store, "req-2", at=T0 + LEASE)
        await finish(idempotency_store, "req-1", response=StoredResponse(500, {}, b"stale"))
        await finish(idempotency_store, "req-2")
        assert await claim(idempotency_store, "req-3") == Replay(RESPONSE)

    async def test_finishing_twice_keeps_the_first_response(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """finish is idempotent: a second one (even with another response) changes nothing."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        await finish(idempotency_store, response=StoredResponse(200, {}, b"other"))
        assert await claim(idempotency_store, "req-2") == Replay(RESPONSE)

    async def test_a_finish_is_replayed_past_the_lease(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """A finished key replays long after its lease would have run out."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        assert await claim(idempotency_store, "req-2", at=T0 + DAY) == Replay(RESPONSE)

    async def test_an_empty_response_replays_as_empty(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """No headers and no body are stored as such, not as missing."""
        empty = StoredResponse(204, {}, b"")
        await claim(idempotency_store)
        await finish(idempotency_store, response=empty)
        assert await claim(idempotency_store, "req-2") == Replay(empty)


class TestRelease:
    async def test_release_by_a_non_holder_is_ignored(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Another request cannot release the key: it stays in flight."""
        await claim(idempotency_store)
        await idempotency_store.release(SCOPE, "key-1", request_id="req-2")
        assert await claim(idempotency_store, "req-3") == InProgress("req-1", T0 + LEASE)

    async def test_a_finished_key_cannot_be_released(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """release forgets only unfinished claims: a stored response stays replayable."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        await idempotency_store.release(SCOPE, "key-1", request_id="req-1")
        assert await claim(idempotency_store, "req-2") == Replay(RESPONSE)

    async def test_releasing_twice_or_an_unknown_key_is_harmless(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """release is idempotent and ignores keys it does not know."""
        await claim(idempotency_store)
        await idempotency_store.release(SCOPE, "key-1", request_id="req-1")
        await idempotency_store.release(SCOPE, "key-1", request_id="req-1")
        await idempotency_store.release(SCOPE, "nope", request_id="req-1")
        assert await claim(idempotency_store, "req-2") == Claimed()


class TestReap:
    async def test_reap_deletes_only_records_past_retain_until(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Finished records retained past `now` go; younger ones and unfinished claims stay."""
        store = idempotency_store
        await claim(store, key="old")
        await finish(store, key="old")
        young = T0 + timedelta(hours=2)
        await claim(store, key="young", at=young)
        await finish(store, key="young", at=young)
        await claim(store, key="open", lease=2 * DAY)
        now = T0 + DAY + timedelta(hours=1)
        assert await store.reap(now=now) == 1
        assert await claim(store, "req-2", key="old", at=now) == Claimed()
        assert await claim(store, "req-2", key="young", at=now) == Replay(RESPONSE)
        assert await claim(store, "req-2", key="open", at=now) == InProgress("req-1", T0 + 2 * DAY)

    async def test_a_record_is_kept_until_its_retain_until_has_passed(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """At exactly retain_until the record stays; a moment later it is reaped."""
        await claim(idempotency_store)
        await finish(idempotency_store)
        assert await idempotency_store.reap(now=T0 + DAY) == 0
        assert await idempotency_store.reap(now=T0 + DAY + timedelta(microseconds=1)) == 1
        assert await idempotency_store.reap(now=T0 + 2 * DAY) == 0

    async def test_reap_never_deletes_an_unfinished_claim(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """An abandoned claim (lease long expired) is not reaped: it is taken over instead."""
        await claim(idempotency_store)
        later = T0 + 3 * DAY
        assert await idempotency_store.reap(now=later) == 0
        assert await claim(idempotency_store, "req-2", at=later) == Claimed(
            recovered=True, previous_request_id="req-1"
        )


class TestConcurrency:
    async def test_twenty_concurrent_claims_have_exactly_one_winner(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Twenty claims of one key started at once: exactly one Claimed, 19 InProgress."""
        await warm_up(idempotency_store)
        results = await asyncio.gather(*(claim(idempotency_store, f"req-{n}") for n in range(20)))
        winners = [n for n, r in enumerate(results) if r == Claimed()]
        assert len(winners) == 1
        holder = f"req-{winners[0]}"
        assert [r for r in results if r != Claimed()] == [InProgress(holder, T0 + LEASE)] * 19

    async def test_concurrent_claims_on_two_replicas_have_exactly_one_winner(
        self, idempotency_store_factory: IdempotencyStoreFactory
    ) -> None:
        """Ten claims on each of two replicas of one database: one winner in all."""
        stores = [await idempotency_store_factory(), await idempotency_store_factory()]
        results = await asyncio.gather(*(claim(stores[n % 2], f"req-{n}") for n in range(20)))
        assert sum(r == Claimed() for r in results) == 1
        assert sum(isinstance(r, InProgress) for r in results) == 19

    async def test_concurrent_takeovers_of_an_expired_lease_have_one_winner(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Ten retries of a crashed request at once: one recovers the key, nine see its lease."""
        await claim(idempotency_store, "crashed")
        await warm_up(idempotency_store)
        later = T0 + 2 * LEASE
        results = await asyncio.gather(
            *(claim(idempotency_store, f"req-{n}", at=later) for n in range(10))
        )
        recovered = Claimed(recovered=True, previous_request_id="crashed")
        winners = [n for n, r in enumerate(results) if r == recovered]
        assert len(winners) == 1
        others = [r for r in results if r != recovered]
        assert others == [InProgress(f"req-{winners[0]}", later + LEASE)] * 9

    async def test_claims_of_different_keys_do_not_interfere(
        self, idempotency_store: IdempotencyStore
    ) -> None:
        """Fifty keys claimed at once: each one Claimed."""
        results = await asyncio.gather(
            *(claim(idempotency_store, f"req-{n}", key=f"key-{n}") for n in range(50))
        )
        assert results == [Claimed()] * 50


class TestClosed:
    async def test_a_closed_store_raises_store_unavailable_everywhere(
        self, ledger: Ledger, idempotency_store: IdempotencyStore
    ) -> None:
        """After the ledger's aclose(), every IdempotencyStore method raises StoreUnavailable."""
        await ledger.aclose()
        calls = [
            claim(idempotency_store),
            finish(idempotency_store),
            idempotency_store.release(SCOPE, "key-1", request_id="req-1"),
            idempotency_store.reap(now=T0),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call
