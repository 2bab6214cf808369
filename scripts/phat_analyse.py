"""MAE of p̂ at α = 0 (one point per held-out task and model, as docs/results.md §5) for the
kernel estimate and for label-free self-estimate maps, from ``scripts/phat_features.py``'s npz.

    python scripts/phat_features.py helm /tmp/helm.npz
    python scripts/phat_analyse.py /tmp/helm.npz

Self-estimate of model m on a task: e = mean over its inputs of q if ĝ = 1 else 1 − q, with q
the share of correct results among the 19 nearest pool inputs (no label of the task). Maps are
learnt, per held-out task, from the reference tasks only (nested leave-one-task-out at α = 0):

- ``raw e``: e itself;
- ``LS``: p ≈ c₀ + c_k·k + c_e·e by least squares, k = each reference task's kernel estimate from
  the other reference tasks' pairs;
- ``2-D kernel``: Nadaraya–Watson in (u, e) per model, bandwidth 0.09 on both axes, with the
  pseudo-reference ½.

Measured (issue 20; intervals: 2,000 bootstrap draws over tasks, seed 0):
HELM MMLU kernel 0.114 → LS 0.095, RouteLLM 0.111 → 0.062; on RouterDC the LS map (in the
router, all α pairs) gave 0.063 against the kernel's 0.051, all of it on ARC-Challenge, whose
nearest pool inputs are the easier ARC-Easy's (e ≈ 0.75, true p ≈ 0.5).
"""

from __future__ import annotations

import sys

import numpy as np

from benchroute.experiments.bootstrap import interval, resample_rows
from benchroute.scoring import apply_p_map, fit_p_map, kernel_smooth

W0, H = float(np.exp(-4.5)), 0.09


def boot(err: np.ndarray, base: np.ndarray, n: int = 2000, seed: int = 0) -> str:
    idx = resample_rows(len(err), n, np.random.default_rng(seed))
    lo, hi = interval(err[idx].mean(1), point=err.mean())
    dlo, dhi = interval((err - base)[idx].mean(1), point=np.mean(err - base))
    return (f"{err.mean():.4f} [{lo:.3f}, {hi:.3f}]  vs kernel {np.mean(err - base):+.4f} "
            f"[{dlo:+.3f}, {dhi:+.3f}]")


def main() -> None:
    z = np.load(sys.argv[1], allow_pickle=False)
    T, M = len(z["tasks"]), len(z["models"])
    p, e_h, k_h, u_h = z["held_p"], z["held_ep19"], z["held_phat"], z["held_u"][:, 0]
    R_u, R_p, R_e = z["ref_u"], z["ref_p"], z["ref_ep19"]
    ls, k2 = np.full((T, M), np.nan), np.full((T, M), np.nan)
    for d in range(T):
        ru, rp, rt = z[f"ru_{d}"], z[f"rp_{d}"], z[f"rt_{d}"]
        others = [i for i in range(T) if i != d]
        K = np.array([kernel_smooth(float(R_u[d, i, 0]), ru[rt != i], rp[rt != i], H) for i in others])
        E, P, U = R_e[d, others], R_p[d, others], R_u[d, others]
        ok = np.isfinite(K) & np.isfinite(E) & np.isfinite(P)
        ls[d] = apply_p_map(fit_p_map(K, E, P, np.asarray(others), min_tasks=1), k_h[d], e_h[d])
        for m in range(M):
            w = np.exp(-(U[:, m] - u_h[d]) ** 2 / (2 * H * H) - (E[:, m] - e_h[d, m]) ** 2 / (2 * H * H))
            w = np.where(ok[:, m], w, 0.0)
            k2[d, m] = (w @ np.nan_to_num(P[:, m]) + W0 * 0.5) / (w.sum() + W0)
    mae = lambda ph: np.nanmean(np.abs(ph - p), axis=1)  # noqa: E731
    base = mae(k_h)
    print("kernel (today)", boot(base, base))
    print("raw e         ", boot(mae(e_h), base))
    print("LS map        ", boot(mae(ls), base))
    print("2-D kernel    ", boot(mae(k2), base))


if __name__ == "__main__":
    main()
