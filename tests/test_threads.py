"""Threads: the barrier between nodes (spin, then sleep) and the thread count chosen per run
when the user leaves it open (tinyggml/threads.py)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinyggml
from tinyggml import threads
from tinyggml.backend import barrier_spin, set_barrier_spin
from tinyggml.tools.testing import write_random_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("threads") / "m2.gguf"
    write_random_model(p, arch="mamba2", n_embd=48, n_layer=2, d_state=24, head_dim=12,
                       n_vocab=320, seed=7)
    return p


class Clock:
    """A fake perf_counter that the fake plans advance."""
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakePlan:
    """A plan whose run on n threads takes cost[n] seconds of the fake clock."""
    def __init__(self, clock, cost):
        self.clock, self.cost, self.ran = clock, cost, []

    def run(self, n):
        self.ran.append(n)
        self.clock.now += self.cost[n]


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(threads.time, "perf_counter", c)
    return c


def test_candidates():
    assert threads.candidates(1) == [1]
    assert threads.candidates(2) == [2, 1]
    assert threads.candidates(8) == [8, 4, 2, 1]
    assert threads.candidates(6) == [6, 3, 1]


def run_many(chooser, plan, st, n):
    for _ in range(n):
        chooser.run(plan, st)


def test_quiet_machine_runs_on_every_core_and_probes_little(clock):
    ch = threads.ThreadChooser(2)
    plan, st = FakePlan(clock, {2: 0.010, 1: 0.019}), threads.PlanTimes()
    run_many(ch, plan, st, 2000)
    tail = plan.ran[100:]
    # probing one thread (9 ms slower) may cost at most PROBE_COST of the time
    extra = tail.count(1) * 0.009 / (len(tail) * 0.010)
    assert tail.count(2) > 0.95 * len(tail) and extra <= threads.PROBE_COST * 1.5


def test_busy_core_moves_to_one_thread_and_back(clock):
    ch = threads.ThreadChooser(2)
    plan, st = FakePlan(clock, {2: 0.010, 1: 0.019}), threads.PlanTimes()
    run_many(ch, plan, st, 200)
    plan.cost = {2: 0.080, 1: 0.020}            # another process takes a core
    plan.ran.clear()
    run_many(ch, plan, st, 200)
    first_one = plan.ran.index(1)
    assert first_one < 25 and plan.ran[first_one:].count(2) <= 0.05 * (200 - first_one)
    plan.cost = {2: 0.010, 1: 0.019}            # and leaves it
    plan.ran.clear()
    run_many(ch, plan, st, 2000)
    back = plan.ran.index(2)                    # runs before it took 19 ms each
    assert back * 0.019 <= threads.PROBE_MAX_S + 0.1
    assert plan.ran[back:].count(2) > 0.95 * (len(plan.ran) - back)


def test_rare_plans_follow_the_most_run_one(clock):
    ch = threads.ThreadChooser(2)
    decode, st = FakePlan(clock, {2: 0.080, 1: 0.020}), threads.PlanTimes()
    run_many(ch, decode, st, 50)
    prompt, pst = FakePlan(clock, {2: 0.5, 1: 0.9}), threads.PlanTimes()
    run_many(ch, prompt, pst, threads.WARM)
    assert prompt.ran == [1] * threads.WARM      # the decode step found the machine busy
    run_many(ch, prompt, pst, 40)                # after WARM runs it judges for itself
    assert prompt.ran[-10:].count(2) >= 9


def test_one_thread_machine_never_probes(clock):
    ch = threads.ThreadChooser(1)
    plan, st = FakePlan(clock, {1: 0.01}), threads.PlanTimes()
    run_many(ch, plan, st, 50)
    assert set(plan.ran) == {1}


def test_auto_threads_give_the_same_logits(model_path):
    toks = np.random.default_rng(0).integers(0, 320, size=40)
    fixed = tinyggml.Model(model_path, n_threads=1)
    auto = tinyggml.Model(model_path)
    assert auto.threads_auto and not fixed.threads_auto
    np.testing.assert_array_equal(auto.eval(toks), fixed.eval(toks))
    steps_fixed = [fixed.eval([t]) for t in toks[:30]]
    steps_auto = [auto.eval([t]) for t in toks[:30]]
    np.testing.assert_array_equal(np.stack(steps_auto), np.stack(steps_fixed))


@pytest.mark.parametrize("spin", [0, 2000, 10**6])
def test_barrier_spin_and_sleep_compute_the_same(model_path, spin):
    """Every thread count (more threads than cores: waiters must sleep and be woken) and every
    spin, including none, gives the one-thread logits; run in a child so a lost wake-up fails
    by timeout instead of hanging the suite."""
    code = textwrap.dedent(f"""
        import numpy as np, tinyggml
        from tinyggml.backend import set_barrier_spin
        set_barrier_spin({spin})
        toks = np.random.default_rng(1).integers(0, 320, size=33)
        want = tinyggml.Model({str(model_path)!r}, n_threads=1).eval(toks)
        for n in (2, 3, 5):
            m = tinyggml.Model({str(model_path)!r}, n_threads=n)
            assert np.array_equal(m.eval(toks), want), n
            for _ in range(150):          # many barriers: a race shows as a hang or a difference
                m.eval([5])
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_set_barrier_spin_checks():
    old = barrier_spin()
    try:
        set_barrier_spin(1234)
        assert barrier_spin() == 1234
        with pytest.raises(ValueError):
            set_barrier_spin(-1)
    finally:
        set_barrier_spin(old)
