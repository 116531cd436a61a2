"""How many threads a plan runs on when the user did not fix the count.

A graph split over every core is fastest on a quiet machine, but on a shared one a second thread
can cost more than it brings: when another process holds one of the cores, every node waits at
the barrier for the thread that lost its core (on two cores, mamba2-130m decoding fell from 46
tokens/s on one thread to 10-35 on two, and the demo model's tiny nodes never repay a second
thread on some machines). Outputs do not depend on the thread count (each kernel splits its work
so that every value is computed the same way), so the count can change from one run to the next.

ThreadChooser times every run of a plan and keeps, per plan and per candidate count (all the
cores, half of them, ..., one), an estimate of its run time; each run takes the candidate with the
lowest. A slower run moves the estimate an eighth of the way (one slow run is noise, a busy
machine is several; a probe, below, half of it); a faster one replaces it (noise only ever slows a run down). A candidate not
chosen is measured again now and then, at intervals that keep what the probes cost under
PROBE_COST of the run time (a candidate twice as slow is probed rarely, one almost as fast often),
so the choice follows the machine as its load comes and goes. A plan that has run only a few
times (a prompt's shape) takes what the most-run plan (the decode step) found best: a couple of
timings are no basis for a choice, and trying each count costs a slow run.
"""
from __future__ import annotations

import time

ALPHA = 0.125         # how far a slower run moves a candidate's estimate
PROBE_ALPHA = 0.5     # and a slower probe (a deliberate measurement, made rarely)
WARM = 8              # runs after which a plan explores and chooses on its own timings
PROBE_COST = 0.01     # what probing the other candidates may cost, as a fraction of run time
PROBE_MIN_S = 0.05    # and how often it may happen at most / least
PROBE_MAX_S = 5.0


def candidates(max_threads: int) -> list[int]:
    """All the threads, then halving down to one: 8 -> [8, 4, 2, 1]."""
    out, n = [], max_threads
    while n > 1:
        out.append(n)
        n //= 2
    return out + [1]


class PlanTimes:
    """One plan's estimates (seconds per run), per candidate thread count."""
    __slots__ = ("avg", "last_probe", "runs", "next_alt")

    def __init__(self):
        self.avg: dict[int, float] = {}
        self.last_probe = 0.0
        self.runs = 0
        self.next_alt = 0


class ThreadChooser:
    """Picks the thread count of each run of a plan (see the module docstring)."""

    def __init__(self, max_threads: int):
        self.candidates = candidates(max_threads)
        self.ref = PlanTimes()             # the plan with the most runs

    def run(self, plan, st: PlanTimes) -> int:
        """Run `plan` once on the count chosen now, `st` being its times; returns the count."""
        n, probe = self._pick(st)
        t0 = time.perf_counter()
        plan.run(n)
        t1 = time.perf_counter()
        st.runs += 1
        if st.runs > 1:            # the first run pays for page faults and cold caches: not timed
            dt, old = t1 - t0, st.avg.get(n)
            step = PROBE_ALPHA if probe else ALPHA
            st.avg[n] = dt if old is None or dt < old else old + step * (dt - old)
        if probe:
            st.last_probe = t1
        if st.runs > self.ref.runs:
            self.ref = st
        return n

    def _best(self, st: PlanTimes) -> int:
        return min(st.avg, key=st.avg.get) if st.avg else self.candidates[0]

    def _pick(self, st: PlanTimes) -> tuple[int, bool]:
        """(threads, whether this run probes a candidate other than the best). Per token: no
        list is built once every candidate has an estimate."""
        cands = self.candidates
        if len(cands) == 1:
            return cands[0], False
        if st is not self.ref and st.runs < WARM:
            return self._best(self.ref), False
        if len(st.avg) < len(cands):                       # a candidate not timed yet
            return next(c for c in cands if c not in st.avg), True
        best = self._best(st)
        alt = cands[st.next_alt % len(cands)]
        if alt == best:
            alt = cands[(st.next_alt + 1) % len(cands)]
        wait = min(PROBE_MAX_S, max(PROBE_MIN_S, (st.avg[alt] - st.avg[best]) / PROBE_COST))
        if time.perf_counter() - st.last_probe < wait:
            return best, False
        st.next_alt += 1
        return alt, True
