"""metarep.compute.threads: how many threads the kernels use, from the CPUs this process may use, its
share of a process pool and a scoped limit."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from metarep.compute import threads


@pytest.fixture
def fresh(monkeypatch):
    """available() looked up again, and the worker share of this process untouched."""
    monkeypatch.setattr(threads, "_worker_share", None)
    clear = threads.available.cache_clear
    clear()
    yield
    clear()


def _cgroups(tmp_path, monkeypatch, *, v2=None, v1=None):
    """A fake /sys/fs/cgroup with this process in /app (v2: cpu.max text; v1: (quota, period))."""
    root = tmp_path / "cgroup"
    lines = []
    if v2 is not None:
        (root / "unified" / "app").mkdir(parents=True)
        (root / "unified" / "app" / "cpu.max").write_text(v2)
        lines.append("0::/app")
    if v1 is not None:
        (root / "cpu" / "app").mkdir(parents=True)
        (root / "cpu" / "app" / "cpu.cfs_quota_us").write_text(str(v1[0]))
        (root / "cpu" / "app" / "cpu.cfs_period_us").write_text(str(v1[1]))
        lines.append("3:cpu,cpuacct:/app")
    proc = tmp_path / "cgroup.txt"
    proc.write_text("\n".join(["9:memory:/elsewhere", *lines]) + "\n")
    monkeypatch.setattr(threads, "_CGROUP", root)
    real_read = threads._read
    monkeypatch.setattr(threads, "_read", lambda p: real_read(proc if str(p) == "/proc/self/cgroup" else p))


@pytest.mark.parametrize("v2,v1,cpus", [("150000 100000", None, 1.5), ("max 100000", None, None),
                                         (None, (50000, 100000), 0.5), (None, (-1, 100000), None),
                                         ("300000 100000", (100000, 100000), 1.0)])
def test_cgroup_quota_v1_and_v2(tmp_path, monkeypatch, fresh, v2, v1, cpus):
    _cgroups(tmp_path, monkeypatch, v2=v2, v1=v1)
    assert threads.cgroup_cpus() == cpus
    monkeypatch.setattr(threads, "_affinity", lambda: 8)
    assert threads.available() == (8 if cpus is None else max(1, -(-cpus // 1)))


def test_available_follows_affinity_and_the_environment(monkeypatch, fresh):
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)
    monkeypatch.setattr(threads, "_affinity", lambda: 6)
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    assert threads.available() == 6
    threads.available.cache_clear()
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.available() == 3
    threads.available.cache_clear()
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.available()


def test_share_count_and_limited(monkeypatch, fresh):
    monkeypatch.setattr(threads, "available", lambda: 8)
    assert [threads.share(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert threads.count() == 8
    with threads.limited(3) as n:
        assert n == 3 and threads.count() == 3
        with threads.limited(5):
            assert threads.count() == 5
        seen = []
        worker = threading.Thread(target=lambda: seen.append(threads.count()))
        worker.start()
        worker.join()
        assert seen == [8]                      # a limit applies to its own thread's calls only
    assert threads.count() == 8
    monkeypatch.setattr(threads, "_worker_share", 2)
    assert threads.count() == 2
    with threads.limited(16):
        assert threads.count() == 2             # never more than the pool share


def _worker_view(_):
    from threadpoolctl import threadpool_info

    from metarep.compute import threads as t
    return t.count(), sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}), os.getpid()


def test_pool_workers_get_their_share_after_numpy_is_imported(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "4")    # the children see 4 usable CPUs, whatever the machine
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=threads.init_worker,
                             initargs=(2,)) as pool:
        views = list(pool.map(_worker_view, range(4)))
    assert {count for count, _, _ in views} == {2}
    assert all(blas == [2] for _, blas, _ in views)


def _torch_threads(_):
    import torch

    return torch.get_num_threads()


def test_pool_workers_cap_torch_to_their_share(monkeypatch):
    """torch, imported after the worker started (the jobs import it) or before, runs its CPU pool
    on the worker's share: 2 usable CPUs over 2 workers give 1 each (torch's default is a thread
    per core; it never takes more than the cores, so the check needs two of them)."""
    torch = pytest.importorskip("torch")
    if torch.get_num_threads() < 2:
        pytest.skip("torch already runs on one thread here")
    monkeypatch.setenv(threads.ENV_VAR, "2")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=threads.init_worker,
                             initargs=(2,)) as pool:
        assert set(pool.map(_torch_threads, range(4))) == {1}
    before = torch.get_num_threads()
    try:
        threads._cap_torch(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_launches_use_only_the_cpus_other_work_leaves_free(monkeypatch, fresh):
    monkeypatch.setattr(threads, "available", lambda: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    # (runnable on the machine, of them this process's own, threads for the launch)
    for runnable, own, want in ((1, 1, 4), (2, 1, 3), (4, 1, 1), (9, 1, 1), (None, 1, 4), (3, 3, 4), (4, 2, 2),
                                (2, None, 3)):
        monkeypatch.setattr(threads, "_runnable", lambda r=runnable: r)
        monkeypatch.setattr(threads, "_own_runnable", lambda o=own: o)
        monkeypatch.setattr(threads, "_seen", [-1.0, 0])            # look again now
        assert threads.launch_count() == want, (runnable, own)
    with threads.limited(1):
        assert threads.launch_count() == 1
    monkeypatch.setattr(threads, "_runnable", lambda: 9)
    monkeypatch.setattr(threads, "_seen", [-1.0, 0])
    monkeypatch.setenv(threads.ENV_VAR, "4")                       # the user's explicit choice stands,
    assert threads.launch_count() == 4                             # whatever the load


def test_runnable_tasks_are_read_from_proc_loadavg():
    n = threads._runnable()
    assert n is None or n >= 1                                     # this test itself is running
    own = threads._own_runnable()
    assert own is None or 1 <= own <= len(os.listdir("/proc/self/task"))
