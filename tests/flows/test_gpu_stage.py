"""Spec: GPU slots. The server's `gpu` limit where it has one; where it has none (an ephemeral
server), a sweep's experiments take turns on this process's local slots instead of all starting at once."""
from __future__ import annotations

import threading
import time

import pytest

from flows.gpu_stage import LocalSlots


def hold_side_by_side(slots: LocalSlots, gpus: list[int], seconds: float = 0.3) -> list[tuple[float, float]]:
    """Each thread holds `gpus[i]` slots for `seconds`; their (enter, exit) times."""
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(gpus)

    def hold(i: int) -> None:
        with slots.hold(gpus[i]):
            entered = time.perf_counter()
            time.sleep(seconds)
            spans[i] = (entered, time.perf_counter())

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(len(gpus))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return spans


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_one_local_slot_makes_experiments_take_turns():
    first, second = hold_side_by_side(LocalSlots(1), [1, 1])
    assert not overlap(first, second)


def test_two_local_slots_let_two_one_gpu_holders_run_together_but_not_a_two_gpu_one():
    assert overlap(*hold_side_by_side(LocalSlots(2), [1, 1]))
    assert not overlap(*hold_side_by_side(LocalSlots(2), [2, 1]))


def test_a_request_above_the_hosts_slots_runs_alone_instead_of_waiting_forever():
    (span,) = hold_side_by_side(LocalSlots(0), [2], seconds=0.01)  # a CPU-only host: one slot
    assert span[1] > span[0]


@pytest.fixture
def no_gpu_limit(prefect_api):
    """The test server without the `gpu` limit (other tests' `flows.pool setup` made one); put back after."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    from flows.gpu_stage import GPU_LIMIT

    with get_client(sync_client=True) as client:
        try:
            slots = client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            slots = None
    yield
    if slots is not None:
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))


def test_without_a_server_limit_gpu_slots_falls_back_to_the_local_slots(no_gpu_limit):
    from prefect import flow, task

    from flows.gpu_stage import gpu_slots

    @task
    def hold(local: LocalSlots) -> tuple[float, float]:
        with gpu_slots(2, local=local):
            entered = time.perf_counter()
            time.sleep(0.5)
            return entered, time.perf_counter()

    @flow
    def two_experiments(local: LocalSlots) -> list[tuple[float, float]]:
        futures = [hold.submit(local) for _ in range(2)]
        return [f.result() for f in futures]

    first, second = two_experiments(LocalSlots(1))
    assert not overlap(first, second)
    first, second = two_experiments(LocalSlots(4))  # 4 slots: two 2-GPU experiments fit together
    assert overlap(first, second)
