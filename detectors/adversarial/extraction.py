# size: one PRADA-style tracker: per-source state, its update and its verdicts belong together
"""Model-extraction detection per source (client id), PRADA-style (Juuti et al. 2019).

An extraction attack synthesises queries from a few seeds (Jacobian-based
augmentation, random sign steps, walks): each new query sits a small, regular
distance from an earlier one. PRADA keeps, per client, the distance from every
new query to the nearest of that client's earlier queries, and tests the
distances for normality with Shapiro–Wilk: benign clients give a smooth,
roughly bell-shaped distribution; synthetic probing gives spikes and gaps, so a
low W flags the client.

What runs here, all vectorised over the events of a batch (no per-event loop):

* queries are rows standardised by the reference (see
  :class:`~detectors.adversarial.monitor.AdversarialMonitor`), distances are
  Euclidean;
* per source the state is small and bounded: a ring of its ``buffer`` most
  recent queries (float32) and a ring of its ``distances`` most recent minimum
  distances; a new query's distance is to the nearest of the source's
  ``buffer`` most recent earlier queries (those before the batch from the ring,
  those inside the batch through a lower-triangular pair list), so memory is
  ``max_sources × (buffer × d + distances) × 4`` bytes;
* exact duplicates (distance 0: retries, replays) are not counted as distances;
* a source is tested when it has ``min_queries`` distances and again every
  ``test_every`` new ones, on its last ``distances`` values; W is computed
  for all due sources at once (:func:`~detectors.adversarial.stats.shapiro_w`,
  grouped by sample size);
* at most ``max_sources`` sources are tracked: sources idle for
  ``idle_seconds`` (event time) are dropped, then the least recently seen ones
  are evicted to make room (both counted).

The flag threshold δ is calibrated (:func:`calibrate`) on benign clients
*simulated from the reference*: sequences of reference rows without
replacement, half drawn from all rows, half that switch (at a random point)
to a random half-space holding a ``focus`` share of the rows — a benign
client concentrating on a subpopulation. The simulated clients run through
the same tracker, tested at every checkpoint (``min_queries`` distances, then
every ``test_every``: the most looks a live client can get, the earliest on the
smallest sample included), and δ is the ``fpr`` quantile of each client's lowest W,
so at most ``fpr`` of benign clients are ever flagged within ``horizon``
queries. Each source also gets a calibrated ``score``: the share of simulated
benign clients whose W never went as low as this one's.

Differences from PRADA, on purpose: no per-predicted-class split of the
query history and no "growing set" filter (every query is kept, in a capped
ring), for bounded memory and a batch-vectorised update.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = ExtractionTracker(dim=2, min_queries=20, test_every=10)
>>> benign = rng.normal(size=(100, 2))
>>> r = t.update(np.array(["a"] * 100, dtype=object), benign, np.zeros(100))
>>> r.n_queries.tolist(), bool(r.w[0] > 0.8)
([100], True)
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from detectors.adversarial.stats import shapiro_w
from detectors.frame import TextGroups

__all__ = [
    "ExtractionCalibration",
    "ExtractionTracker",
    "SourceUpdate",
    "calibrate",
    "simulate_benign",
    "tail_quantile",
]

_CHUNK_ELEMENTS = 2_000_000  # float64 elements per distance block (~16 MB)
_BLOCK_ELEMENTS = 262_144  # float64 elements per chunk of query blocks (2 MB: fits in cache)
_SMALL = 256  # sources with at most this many queries in a batch are handled in padded buckets
_DUP_SQ = 1e-9  # squared distances at or below this are duplicates (rounding of the expansion)


@dataclass(frozen=True)
class SourceUpdate:
    """The sources seen in one batch (one entry per source, batch order of first appearance)."""

    source: np.ndarray  # object[str]
    n_batch: np.ndarray  # int64: queries in this batch
    n_queries: np.ndarray  # int64: queries since tracked
    w: np.ndarray  # float64: latest Shapiro-Wilk W (NaN: not tested yet)
    tested: np.ndarray  # bool: tested in this batch
    flagged: np.ndarray  # bool: latest test below delta
    score: np.ndarray  # float64 in [0, 1]: calibrated suspicion (NaN: not tested yet)
    first_flag: np.ndarray  # int64: queries when first flagged (-1: never)

    def __len__(self) -> int:
        return int(self.source.shape[0])


@dataclass(frozen=True)
class ExtractionCalibration:
    """δ and the benign null it comes from (lowest W of each simulated benign client)."""

    delta: float
    null_min_w: np.ndarray  # sorted; +inf for simulated clients never tested
    fpr: float
    n_uniform: int
    n_focused: int
    horizon: int

    def score(self, w: np.ndarray) -> np.ndarray:
        """Share of simulated benign clients whose lowest W stayed above ``w`` (NaN stays NaN)."""
        w = np.asarray(w, dtype=np.float64)
        n = self.null_min_w.shape[0]
        below_or_eq = np.searchsorted(self.null_min_w, np.nan_to_num(w, nan=0.0), side="right")
        s = 1.0 - below_or_eq / n
        return np.where(np.isnan(w), np.nan, s)


class ExtractionTracker:
    """Bounded per-source state and the vectorised PRADA update (see module docstring)."""

    def __init__(
        self,
        dim: int,
        *,
        buffer: int = 128,
        distances: int = 256,
        min_queries: int = 50,
        test_every: int = 25,
        max_sources: int = 5000,
        idle_seconds: float = 3600.0,
        calibration: ExtractionCalibration | None = None,
    ) -> None:
        if dim < 1:
            raise ValueError("extraction tracking needs at least one numeric feature")
        if min_queries < 3 or min_queries > distances:
            raise ValueError(f"min_queries must be in [3, distances={distances}], got {min_queries}")
        self.dim = int(dim)
        self.B = int(buffer)
        self.M = int(distances)
        self.min_queries = int(min_queries)
        self.test_every = max(1, int(test_every))
        self.max_sources = int(max_sources)
        self.idle_seconds = float(idle_seconds)
        self.calibration = calibration
        self.evicted = 0  # least-recently-seen evictions to make room
        self.expired = 0  # dropped after idle_seconds
        self.overflow = 0  # queries ignored: more new sources in one batch than max_sources
        self.duplicates = 0  # queries at distance 0 of an earlier one (not counted)
        self._slot: dict[str, int] = {}
        self._cap = 0
        self._free: list[int] = []
        self._grow(min(self.max_sources, 64))

    # -- state -----------------------------------------------------------------------------

    def _grow(self, cap: int) -> None:
        cap = min(cap, self.max_sources)
        old = self._cap
        if cap <= old:
            return

        def ext(a: np.ndarray | None, shape: tuple[int, ...], dtype, fill) -> np.ndarray:
            out = np.full((cap, *shape), fill, dtype=dtype)
            if a is not None:
                out[:old] = a
            return out

        g = getattr
        self._q = ext(g(self, "_q", None), (self.B, self.dim), np.float32, 0.0)
        self._q_count = ext(g(self, "_q_count", None), (), np.int64, 0)
        self._q_head = ext(g(self, "_q_head", None), (), np.int64, 0)
        self._d = ext(g(self, "_d", None), (self.M,), np.float32, 0.0)
        self._d_total = ext(g(self, "_d_total", None), (), np.int64, 0)
        self._n = ext(g(self, "_n", None), (), np.int64, 0)
        self._last = ext(g(self, "_last", None), (), np.float64, -np.inf)
        self._w = ext(g(self, "_w", None), (), np.float64, np.nan)
        self._flag = ext(g(self, "_flag", None), (), bool, False)
        self._first = ext(g(self, "_first", None), (), np.int64, -1)
        self._src = ext(g(self, "_src", None), (), object, None)
        self._free.extend(range(cap - 1, old - 1, -1))
        self._cap = cap

    def _reset(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            self._slot.pop(self._src[s], None)
        self._q_count[slots] = 0
        self._q_head[slots] = 0
        self._d_total[slots] = 0
        self._n[slots] = 0
        self._last[slots] = -np.inf
        self._w[slots] = np.nan
        self._flag[slots] = False
        self._first[slots] = -1
        self._src[slots] = None
        self._free.extend(slots.tolist())

    @property
    def n_sources(self) -> int:
        """Sources tracked now."""
        return len(self._slot)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the per-source arrays (grows with sources up to ``max_sources``)."""
        return int(
            sum(
                a.nbytes
                for a in (
                    self._q,
                    self._d,
                    self._q_count,
                    self._q_head,
                    self._d_total,
                    self._n,
                    self._last,
                    self._w,
                    self._flag,
                    self._first,
                )
            )
            + self._src.nbytes
        )

    def state(self, source: str) -> dict[str, object] | None:
        """One source's counters (for inspection and tests); None if not tracked."""
        s = self._slot.get(source)
        if s is None:
            return None
        return {
            "n_queries": int(self._n[s]),
            "n_distances": int(self._d_total[s]),
            "w": float(self._w[s]),
            "flagged": bool(self._flag[s]),
            "first_flag": int(self._first[s]),
            "last_seen": float(self._last[s]),
        }

    def _assign(self, names: np.ndarray, now: float) -> np.ndarray:
        """Slot of each (unique) source name, making room as needed; -1 where none is left."""
        if self.idle_seconds < np.inf and self._slot:
            used = np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))
            idle = used[self._last[used] < now - self.idle_seconds]
            if idle.size:
                self.expired += int(idle.size)
                self._reset(idle)
        get = self._slot.get
        slots = np.fromiter((get(k, -1) for k in names.tolist()), dtype=np.int64, count=names.shape[0])
        new = np.flatnonzero(slots < 0)
        if new.size:
            if new.size > len(self._free) and self._cap < self.max_sources:
                self._grow(max(self._cap * 2, self._cap + new.size - len(self._free)))
            short = new.size - len(self._free)
            if short > 0:  # evict the least recently seen sources not in this batch
                used = np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))
                keep = np.zeros(self._cap, dtype=bool)
                keep[slots[slots >= 0]] = True
                cand = used[~keep[used]]
                k = min(short, cand.size)
                if k:
                    victims = cand[np.argpartition(self._last[cand], k - 1)[:k]]
                    self.evicted += int(k)
                    self._reset(victims)
            take = min(new.size, len(self._free))
            for i in new[:take].tolist():
                s = self._free.pop()
                slots[i] = s
                self._slot[names[i]] = s
                self._src[s] = names[i]
        return slots

    def _nearest_sq(self, s: np.ndarray, Zs: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Squared distance of each (grouped) query to the nearest of its source's B most recent earlier ones.

        Every source's candidates are laid out as one sequence: its ring of past queries,
        oldest first, then its batch queries. Query ``i`` of the batch looks back at
        sequence positions ``i .. B + i - 1`` — a band that is the same for every source —
        and ring slots not filled yet (or batch padding) get an infinite norm, so the whole
        search is matrix products plus in-place adds of a fixed ``+inf`` penalty outside the
        band, on chunks small enough to stay in cache. Sources with at most ``_SMALL``
        queries in the batch are bucketed by padded size (powers of two) and done one
        bucket at a time; busier sources go block by block (:meth:`_nearest_blocked`).
        """
        n = s.shape[0]
        B, d = self.B, self.dim
        best = np.full(n, np.inf)
        Z = Zs.astype(np.float64)
        zn = np.einsum("nd,nd->n", Z, Z)
        arB = np.arange(B)
        psize = np.left_shift(1, np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64))
        small = sizes <= _SMALL
        for P in np.unique(psize[small]).tolist():
            gsel = np.flatnonzero(small & (psize == P))
            ar = np.arange(P)
            cols = np.arange(B + P)[None, :]
            penalty = np.where((cols >= ar[:, None]) & (cols < B + ar[:, None]), 0.0, np.inf)  # (P, B + P)
            per = max(1, _BLOCK_ELEMENTS // (P * (B + P)))
            for a in range(0, gsel.shape[0], per):
                gi = gsel[a : a + per]
                slots = s[starts[gi]]
                ev = ar[None, :] < sizes[gi][:, None]
                idx = np.where(ev, starts[gi][:, None] + ar[None, :], starts[gi][:, None])
                X = np.empty((gi.shape[0], B + P, d))
                X[:, :B] = self._q[slots[:, None], (self._q_head[slots][:, None] + arB[None, :]) % B]
                X[:, B:] = Z[idx]
                Xn = np.empty((gi.shape[0], B + P))
                Xn[:, :B] = np.where(
                    (B - 1 - arB)[None, :] < self._q_count[slots][:, None],
                    np.einsum("gbd,gbd->gb", X[:, :B], X[:, :B]),
                    np.inf,
                )
                Xn[:, B:] = np.where(ev, zn[idx], np.inf)
                d2 = X[:, B:] @ np.ascontiguousarray(X.transpose(0, 2, 1))
                d2 *= -2.0  # in place from here: no more full-size temporaries
                d2 += Xn[:, B:, None]
                d2 += Xn[:, None, :]
                d2 += penalty
                m = d2.min(axis=2)
                best[idx[ev]] = m[ev]
        large = np.flatnonzero(~small)
        if large.size:
            self._nearest_blocked(s, Z, zn, starts[large], sizes[large], best)
        return np.maximum(best, 0.0)

    def _nearest_blocked(
        self, s: np.ndarray, Z: np.ndarray, zn: np.ndarray, starts: np.ndarray, sizes: np.ndarray, best: np.ndarray
    ) -> None:
        """:meth:`_nearest_sq` for sources with many queries in the batch, all at once.

        Each source's sequence — its ring of past queries (oldest first), then its batch
        queries, padded to whole blocks of ``B`` rows — is laid out in one array. The
        queries of block ``b`` only look back ``B`` rows, so their candidates are blocks
        ``b - 1`` and ``b``: one batched matrix product of ``(B × d) @ (d × 2B)`` per
        block, a fixed band mask (lag 1..B), and ``+inf`` norms for ring slots not yet
        filled and for padding. Writes into ``best`` (indexed like ``Z``).
        """
        B, d = self.B, Z.shape[1]
        arB = np.arange(B)
        nb = -(-sizes // B)  # query blocks per source
        seg_blocks = nb + 1  # + the ring's block
        first_block = np.concatenate(([0], np.cumsum(seg_blocks)[:-1]))
        T = int(seg_blocks.sum()) * B
        X = np.zeros((T, d))
        Xn = np.full(T, np.inf)
        dest = np.full(T, -1, dtype=np.int64)
        # ring, oldest first: slot (head + k) % B holds age B - 1 - k
        slots = s[starts]
        ring_rows = (first_block * B)[:, None] + arB[None, :]
        ordered = (self._q_head[slots][:, None] + arB[None, :]) % B
        X[ring_rows] = self._q[slots[:, None], ordered]
        filled = (B - 1 - arB)[None, :] < self._q_count[slots][:, None]
        Xn[ring_rows[filled]] = np.einsum("nd,nd->n", X[ring_rows[filled]], X[ring_rows[filled]])
        # batch queries after the ring
        grp = np.repeat(np.arange(sizes.shape[0]), sizes)
        src = np.repeat(starts, sizes) + (np.arange(grp.shape[0]) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        rows = (first_block[grp] + 1) * B + (src - starts[grp])
        X[rows] = Z[src]
        Xn[rows] = zn[src]
        dest[rows] = src
        Xb, Xnb = X.reshape(-1, B, d), Xn.reshape(-1, B)
        qblocks = np.concatenate([np.arange(f + 1, f + 1 + k) for f, k in zip(first_block.tolist(), nb.tolist())])
        c = arB[None, :]
        band = (c >= arB[:, None]) & (c < arB[:, None] + B)  # column c of [block b-1 | block b]: lag B + r - c
        band = np.concatenate((band, (arB[None, :] < arB[:, None])), axis=1)
        penalty = np.where(band, 0.0, np.inf)  # added: +inf outside lags 1..B
        XT = np.ascontiguousarray(Xb.transpose(0, 2, 1))  # (blocks, d, B): BLAS-friendly right operand
        per = max(1, _BLOCK_ELEMENTS // (2 * B * B))  # small chunks: the temporaries stay in cache
        for a in range(0, qblocks.shape[0], per):
            qb = qblocks[a : a + per]
            d2 = Xb[qb] @ np.concatenate((XT[qb - 1], XT[qb]), axis=2)
            d2 *= -2.0  # in place from here: no more full-size temporaries
            d2 += Xnb[qb][:, :, None]
            d2 += np.concatenate((Xnb[qb - 1], Xnb[qb]), axis=1)[:, None, :]
            d2 += penalty
            m = d2.min(axis=2).ravel()
            dq = dest[(qb[:, None] * B + arB[None, :]).ravel()]
            ok = dq >= 0
            best[dq[ok]] = m[ok]

    # -- the update --------------------------------------------------------------------------

    def update(
        self, sources: np.ndarray, Z: np.ndarray, times: np.ndarray | None = None, groups: TextGroups | None = None
    ) -> SourceUpdate:
        """Add a batch of queries (rows of ``Z``, in arrival order) and test the sources that are due.

        ``sources``: object array of client ids (None = unknown: ignored); ``times``: event
        times (epoch s), for idle expiry and LRU eviction; ``groups``: the rows of ``sources``
        grouped by client id, if the caller has them (:meth:`detectors.frame.Frame.text_groups`).
        """
        Z = np.asarray(Z, dtype=np.float32)
        if Z.ndim != 2 or Z.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got {Z.shape}")
        sources = np.asarray(sources, dtype=object)
        n_all = Z.shape[0]
        times = np.zeros(n_all) if times is None else np.asarray(times, dtype=np.float64)
        if sources.shape[0] != n_all or times.shape[0] != n_all:
            raise ValueError("sources, queries and times must have the same length")
        if groups is None:
            groups = TextGroups.of(sources)
        elif groups.row.shape[0] != n_all:
            raise ValueError("sources, queries and their groups must have the same length")
        ok, names, inv = groups.unique()
        if not ok.all():
            Z, times = Z[ok], times[ok]
        if Z.shape[0] == 0:
            return _empty_update()
        now = float(np.nanmax(times)) if np.isfinite(times).any() else 0.0
        uslots = self._assign(names, now)
        slot_e = uslots[inv]
        keep = slot_e >= 0
        if not keep.all():
            self.overflow += int((~keep).sum())
            slot_e, Z, times = slot_e[keep], Z[keep], times[keep]
        n = Z.shape[0]
        if n == 0:
            return _empty_update()

        order = np.argsort(slot_e, kind="stable")  # grouped by source, arrival order kept
        s = slot_e[order]
        Zs = Z[order]
        ts = times[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        sizes = np.diff(np.r_[starts, n])
        gslot = s[starts]
        pos = np.arange(n) - np.repeat(starts, sizes)
        best = self._nearest_sq(s, Zs, starts, sizes)
        best[best <= _DUP_SQ] = 0.0
        dmin = np.sqrt(best)
        finite = np.isfinite(dmin)
        dup = finite & (dmin == 0)
        self.duplicates += int(dup.sum())
        counted = finite & ~dup

        # rings: distances, then queries ------------------------------------------------------
        cs = np.cumsum(counted)
        before = np.r_[0, cs][starts]
        rank = cs - 1 - np.repeat(before, sizes)  # 0-based rank among counted, per source
        kcount = np.add.reduceat(counted.astype(np.int64), starts)
        old_total = self._d_total[gslot].copy()
        w_ok = counted & (rank >= np.repeat(kcount, sizes) - self.M)
        col = (np.repeat(old_total, sizes)[w_ok] + rank[w_ok]) % self.M
        self._d[s[w_ok], col] = dmin[w_ok].astype(np.float32)
        self._d_total[gslot] = old_total + kcount

        q_ok = pos >= np.repeat(sizes, sizes) - self.B
        qcol = (np.repeat(self._q_head[gslot], sizes)[q_ok] + pos[q_ok]) % self.B
        self._q[s[q_ok], qcol] = Zs[q_ok]
        self._q_head[gslot] = (self._q_head[gslot] + sizes) % self.B
        self._q_count[gslot] = np.minimum(self._q_count[gslot] + sizes, self.B)
        self._n[gslot] += sizes
        last = np.maximum.reduceat(np.nan_to_num(ts, nan=now), starts)
        self._last[gslot] = np.maximum(self._last[gslot], last)

        # tests ---------------------------------------------------------------------------------
        new_total = self._d_total[gslot]
        mq, ev = self.min_queries, self.test_every
        due = (new_total >= mq) & ((old_total < mq) | ((new_total - mq) // ev > (old_total - mq) // ev))
        tested = np.zeros(gslot.shape[0], dtype=bool)
        if due.any():
            dslots = gslot[due]
            k = np.minimum(self._d_total[dslots], self.M)
            w = np.empty(dslots.shape[0])
            for size in np.unique(k).tolist():
                sel = k == size
                w[sel] = shapiro_w(self._d[dslots[sel], :size])
            self._w[dslots] = w
            if self.calibration is not None:
                flag = w < self.calibration.delta
                self._flag[dslots] = flag
                newly = flag & (self._first[dslots] < 0)
                self._first[dslots[newly]] = self._n[dslots[newly]]
            tested[due] = True
        # report in order of first appearance in the batch
        first_pos = np.minimum.reduceat(order, starts)  # original index of each source's first event
        rep = np.argsort(first_pos, kind="stable")
        g = gslot[rep]
        w_now = self._w[g].copy()
        score = self.calibration.score(w_now) if self.calibration is not None else np.full(g.shape[0], np.nan)
        return SourceUpdate(
            source=self._src[g].copy(),
            n_batch=sizes[rep].astype(np.int64),
            n_queries=self._n[g].copy(),
            w=w_now,
            tested=tested[rep],
            flagged=self._flag[g].copy(),
            score=score,
            first_flag=self._first[g].copy(),
        )


def _empty_update() -> SourceUpdate:
    e = np.empty(0)
    return SourceUpdate(
        np.empty(0, dtype=object),
        e.astype(np.int64),
        e.astype(np.int64),
        e,
        e.astype(bool),
        e.astype(bool),
        e,
        e.astype(np.int64),
    )


# -- calibration ------------------------------------------------------------------------------


def _sequences(
    Z: np.ndarray, n_uniform: int, n_focused: int, horizon: int, focus: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row-index sequences of simulated benign clients (no row twice in one sequence)."""
    n = Z.shape[0]
    L = min(horizon, n)
    seqs = [rng.permutation(n)[:L] for _ in range(n_uniform)]
    d = Z.shape[1]
    for i in range(n_focused):
        if i % 2 == 0:  # a half-space along one feature
            u = np.zeros(d)
            u[rng.integers(d)] = rng.choice([-1.0, 1.0])
        else:  # along a random direction
            u = rng.normal(size=d)
            u /= np.linalg.norm(u) or 1.0
        p = Z @ u
        inside = p >= np.quantile(p, 1.0 - focus)
        switch = int(rng.integers(0, L // 2 + 1))
        perm = rng.permutation(n)
        prefix = perm[:switch]
        used = np.zeros(n, dtype=bool)
        used[prefix] = True
        rest = perm[switch:]
        rest = rest[inside[rest] & ~used[rest]]
        seqs.append(np.concatenate([prefix, rest])[:L])
    return seqs


TAIL_POINTS = 20  # lowest simulated values the exponential tail is fitted to (at least)


def tail_quantile(null: np.ndarray, q: float) -> float:
    """The lower ``q`` quantile of ``null`` (lowest W per simulated benign client; +inf: never tested).

    Where the simulations resolve it (``j = floor(q · (N + 1)) ≥`` :data:`TAIL_POINTS`) it is
    the ``j``-th lowest value. Below that an order statistic is the noisy minimum of a few
    draws (with 1,000 simulations and ``q`` = 1e-4 it would be the minimum, a 1-in-10 event at
    best), so the lower tail is extrapolated, peaks-over-threshold: the ``k`` lowest values
    (``k = max(TAIL_POINTS, 5 %)``) lie below ``u`` (the next one) by exponentially distributed
    amounts of mean ``β``, so ``P(W < u − x) ≈ (k / N) · exp(−x / β)`` and the quantile is
    ``u − β · ln(k / (N q))``. 0 (never flag) when no simulated client reached a test.

    >>> rng = np.random.default_rng(0)
    >>> x = 1 - rng.exponential(0.1, 2000)          # exact lower tail: 1 + 0.1 ln(q)
    >>> bool(abs(tail_quantile(x, 1e-4) - (1 + 0.1 * np.log(1e-4))) < 0.1)
    True
    """
    v = np.sort(np.asarray(null, dtype=np.float64))
    n = v.shape[0]
    fin = v[np.isfinite(v)]
    if fin.size == 0 or n == 0:
        return 0.0
    j = int(np.floor(q * (n + 1)))
    if j >= TAIL_POINTS:
        return float(v[j - 1]) if np.isfinite(v[j - 1]) else 0.0
    k = min(max(TAIL_POINTS, int(np.ceil(0.05 * n))), fin.size - 1)
    if k < 2:
        return float(fin[0])
    u = fin[k]
    beta = float(np.mean(u - fin[:k]))
    return float(max(0.0, u - beta * np.log(k / (n * q)))) if beta > 0 else float(fin[0])


def simulate_benign(
    Z: np.ndarray,
    *,
    n_uniform: int,
    n_focused: int,
    horizon: int,
    focus: float,
    seed: int = 0,
    **tracker_kw,
) -> np.ndarray:
    """Lowest W of each simulated benign client (``+inf`` if it never reached a test).

    Every client is fed to one :class:`ExtractionTracker` in blocks that end exactly at its
    checkpoints (``min_queries``, then every ``test_every`` distances), so each is tested at
    every checkpoint a live client can reach — including the earliest, on the smallest and
    most variable sample, which a client sending a few queries per window gets.
    """
    rng = np.random.default_rng(seed)
    Z = np.asarray(Z, dtype=np.float32)
    seqs = _sequences(Z, n_uniform, n_focused, horizon, focus, rng)
    k = len(seqs)
    tracker_kw = {**tracker_kw, "max_sources": k, "idle_seconds": np.inf, "calibration": None}
    t = ExtractionTracker(Z.shape[1], **tracker_kw)
    lengths = np.array([len(q) for q in seqs])
    pad = np.full((k, int(lengths.max())), -1, dtype=np.int64)
    for i, q in enumerate(seqs):
        pad[i, : len(q)] = q
    ids = np.array([f"sim-{i}" for i in range(k)], dtype=object)
    min_w = np.full(k, np.inf)
    # tests at exactly min_queries, min_queries + test_every, ... distances (the first query has none):
    # the earliest and every later look a live client can get, small samples included
    cuts = [0, *range(t.min_queries + 1, pad.shape[1], t.test_every), pad.shape[1]]
    for a, z in pairwise(cuts):
        block = pad[:, a:z]
        ok = block >= 0
        rows, _ = np.nonzero(ok)
        if rows.size == 0:
            break
        r = t.update(ids[rows], Z[block[ok]], np.full(rows.size, float(a)))
        tested = r.tested
        if tested.any():
            idx = np.fromiter((int(s[4:]) for s in r.source[tested]), dtype=np.int64)
            min_w[idx] = np.minimum(min_w[idx], r.w[tested])
    return min_w


def calibrate(
    Z: np.ndarray,
    *,
    fpr: float = 0.01,
    simulations: int = 400,
    focus: float = 0.5,
    horizon: int = 600,
    seed: int = 0,
    **tracker_kw,
) -> ExtractionCalibration:
    """δ such that at most ``fpr`` of simulated benign clients are ever flagged (see module docstring).

    ``Z``: standardised reference rows. With ``focus=1`` all simulated clients draw from
    all rows. δ is the ``fpr`` quantile of the clients' lowest W (:func:`tail_quantile`:
    the order statistic where the simulations resolve it, an exponential tail beyond);
    a source is flagged when its W is strictly below δ.
    """
    Z = np.asarray(Z, dtype=np.float32)
    mq = tracker_kw.get("min_queries", 50)
    if Z.shape[0] < mq + 2:
        raise ValueError(f"extraction calibration needs more than {mq + 1} reference rows, got {Z.shape[0]}")
    n_focused = simulations // 2 if focus < 1.0 else 0
    n_uniform = simulations - n_focused
    null = np.sort(
        simulate_benign(
            Z, n_uniform=n_uniform, n_focused=n_focused, horizon=horizon, focus=focus, seed=seed, **tracker_kw
        )
    )
    delta = tail_quantile(null, fpr)
    return ExtractionCalibration(
        delta=delta,
        null_min_w=null,
        fpr=float(fpr),
        n_uniform=n_uniform,
        n_focused=n_focused,
        horizon=min(horizon, Z.shape[0]),
    )
