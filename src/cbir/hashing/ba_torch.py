"""The binary autoencoder's MAC steps in torch, for a GPU (``BinaryAutoencoder(device="cuda")``).

A line-by-line counterpart of the numpy implementation (:class:`cbir.hashing.ba._MACState`,
:mod:`cbir.hashing.svm`, :mod:`cbir.hashing.zstep`) with the same algorithms, precisions
(float32 for the (N, D) products, float64 for the rest) and tie rules: the h step solves all
bits' SVMs at once (truncated Newton, preconditioned CG, exact line search), the f step is the
least-squares decoder, the Z step enumerates (L <= exact_max_bits) or relaxes, rounds and flips
bits. Results agree with the numpy path up to floating-point differences, which can change
individual bits and so the later iterates (see the tests for the tolerance). Imported only
when a torch device is asked for.
"""

from __future__ import annotations

from math import comb

import numpy as np
import torch

from cbir.hashing.zstep import all_codes, flip_masks

_NEWTON_CAP = 1000
_CHUNK_ELEMENTS = 1 << 22


def resolve_device(device: str) -> torch.device | None:
    """The torch device for a BinaryAutoencoder ``device`` option; None means the numpy path."""
    if device == "torch-cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but torch sees no CUDA GPU; use device='auto' or 'cpu'")
        return torch.device("cuda")
    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    raise ValueError(f"not a torch device option: {device!r}")


# ---------------------------------------------------------------------------------- SVM (h step)
def _line_search(V, D, M, XD, Y, C):
    """argmin_{t >= 0} f(V + t D) per column (see cbir.hashing.svm.exact_line_search)."""
    U = 1.0 - Y * M
    S = Y * XD
    active = ((U > 0) | ((U == 0) & (S < 0))).double()
    A = (V * D).sum(0) - 2 * C * (active * S * U).sum(0)
    B = (D * D).sum(0) + 2 * C * (active * S * S).sum(0)
    valid = (S != 0) & (U / torch.where(S != 0, S, 1.0) > 0)
    T = torch.where(valid, U / torch.where(S != 0, S, 1.0), torch.inf)
    sign = torch.where(S > 0, 1.0, -1.0).double()
    dA = torch.where(valid, sign * 2 * C * S * U, 0.0)
    dB = torch.where(valid, -sign * 2 * C * S * S, 0.0)
    T, order = torch.sort(T, dim=0, stable=True)
    zero = torch.zeros((1, T.shape[1]), dtype=T.dtype, device=T.device)
    A_seg = A + torch.cat([zero, torch.cumsum(torch.gather(dA, 0, order), 0)])
    B_seg = B + torch.cat([zero, torch.cumsum(torch.gather(dB, 0, order), 0)])
    ends = torch.cat([T, torch.full_like(zero, torch.inf)])
    slope_at_end = torch.where(torch.isinf(ends), torch.inf, A_seg + B_seg * torch.where(torch.isinf(ends), 0.0, ends))
    seg = torch.argmax((slope_at_end >= 0).to(torch.uint8), dim=0)[None]
    A_k, B_k = torch.gather(A_seg, 0, seg)[0], torch.gather(B_seg, 0, seg)[0]
    t = torch.where(B_k > 0, -A_k / torch.where(B_k > 0, B_k, 1.0), 0.0)
    return torch.clamp(t, min=0.0)


class _Preconditioner:
    """Diagonal plus a dense block over the first ``block`` coordinates (cf. cbir.hashing.svm)."""

    def __init__(self, X, X_sq, act, C, block):
        self.diag = 1.0 + 2 * C * (X_sq.T @ act.float()).double()
        self.block = min(block, X.shape[1])
        if self.block:
            k = self.block
            Xk = X[:, :k]
            blocks = torch.stack([(Xk * act[:, j : j + 1].float()).T @ Xk for j in range(act.shape[1])]).double()
            self.inv = torch.linalg.inv(torch.eye(k, dtype=torch.float64, device=X.device) + 2 * C * blocks)

    def __call__(self, r):
        z = r / self.diag
        if self.block:
            z[: self.block] = torch.einsum("jab,bj->aj", self.inv, r[: self.block])
        return z


def _pcg(X, precond, act, G, C, cg_tol, max_cg):
    r = -G
    z = precond(r)
    p = z.clone()
    rz = (r * z).sum(0)
    stop = cg_tol * torch.linalg.norm(G, dim=0)
    d = torch.zeros_like(G)
    Xd = torch.zeros(act.shape, dtype=torch.float64, device=X.device)
    done = torch.zeros(G.shape[1], dtype=torch.bool, device=X.device)
    steps = 0
    for steps in range(1, max_cg + 1):
        Xp = (X @ p.float()).double()
        Hp = p + 2 * C * (X.T @ (act * Xp).float()).double()
        pHp = (p * Hp).sum(0)
        alpha = torch.where(done | (pHp <= 0), 0.0, rz / torch.where(pHp > 0, pHp, 1.0))
        d += alpha * p
        Xd += alpha * Xp
        r -= alpha * Hp
        done |= torch.linalg.norm(r, dim=0) <= stop
        if bool(done.all()):
            break
        z = precond(r)
        rz_new = (r * z).sum(0)
        p = z + (rz_new / torch.where(rz > 0, rz, 1.0)) * p
        rz = rz_new
    return d, Xd, steps


def fit_squared_hinge_svm(X, Y, C, V0, *, tol, max_newton, max_cg, X_sq, precond_block, cg_tol=0.1):
    """cbir.hashing.svm.fit_squared_hinge_svm on torch tensors (X float32, Y and V0 float64)."""
    n, k = Y.shape
    max_newton = _NEWTON_CAP if max_newton is None else int(max_newton)
    max_cg = 2 * X.shape[1] if max_cg is None else int(max_cg)
    V = V0.clone()
    g0_norm = torch.linalg.norm(2 * C * (X.T @ Y.float()).double(), dim=0)
    n_pos = (Y > 0).sum(0)
    stop = tol * torch.clamp(torch.minimum(n_pos, n - n_pos), min=1) / n * g0_norm
    M = (X @ V.float()).double()
    todo = torch.arange(k, device=X.device)
    n_newton = n_cg = 0
    for _ in range(max_newton + 1):
        Yt, Mt, Vt = Y[:, todo], M[:, todo], V[:, todo]
        U = 1.0 - Yt * Mt
        act = (U > 0).double()
        G = Vt - 2 * C * (X.T @ (Yt * U * act).float()).double()
        keep = torch.linalg.norm(G, dim=0) > stop[todo]
        if not bool(keep.any()) or n_newton == max_newton:
            break
        todo, Yt, Mt, Vt, act, G = todo[keep], Yt[:, keep], Mt[:, keep], Vt[:, keep], act[:, keep], G[:, keep]
        precond = _Preconditioner(X, X_sq, act, C, precond_block)
        D, XD, steps = _pcg(X, precond, act, G, C, cg_tol, max_cg)
        t = _line_search(Vt, D, Mt, XD, Yt, C)
        V[:, todo] = Vt + t * D
        M[:, todo] = Mt + t * XD
        n_newton += 1
        n_cg += steps
    return V, {"n_newton": n_newton, "n_cg": n_cg}


# ---------------------------------------------------------------------------------- Z step
def _objective(Z, q, G, H, mu):
    Zf = Z.double()
    return -2 * (Zf * q).sum(1) + ((Zf @ G) * Zf).sum(1) + mu * (Z != H).sum(1)


def _search_radius(h_err, mu, n_bits):
    return torch.clamp(torch.floor(torch.clamp(h_err, min=0.0) / mu), max=n_bits).long()


def _zstep_exact(q, G, H, mu, h_err):
    n_bits = q.shape[1]
    radius = _search_radius(h_err, mu, n_bits)
    Z = H.clone()
    for r in torch.unique(radius[radius > 0]).tolist():
        idx = torch.nonzero(radius == r).flatten()
        n_masks = sum(comb(n_bits, k) for k in range(r + 1))
        if n_masks * n_bits <= (1 << n_bits):
            masks = torch.tensor(flip_masks(n_bits, int(r)), device=q.device)
            _best_flips(Z, idx, q, G, H, mu, masks)
        else:
            _best_of_all(Z, idx, q, G, H, mu)
    return Z


def _best_flips(Z, idx, q, G, H, mu, masks):
    n_masks, n_bits = masks.shape
    penalty = mu * masks.sum(1)
    step = max(1, _CHUNK_ELEMENTS // (n_masks * n_bits))
    for start in range(0, len(idx), step):
        rows = idx[start : start + step]
        h = H[rows].double()
        s = 1.0 - 2.0 * h
        lin = 2.0 * (s * (h @ G - q[rows])) @ masks.T
        delta = s[:, None, :] * masks[None, :, :]
        quad = ((delta @ G) * delta).sum(2)
        best = torch.argmin(lin + quad + penalty, dim=1)
        Z[rows] = H[rows] ^ masks[best].to(torch.uint8)


def _best_of_all(Z, idx, q, G, H, mu):
    codes = torch.tensor(all_codes(q.shape[1]), device=q.device)
    const = ((codes @ G) * codes).sum(1) + mu * codes.sum(1)
    weights = 1 << torch.arange(q.shape[1] - 1, -1, -1, device=q.device)
    step = max(1, _CHUNK_ELEMENTS // len(codes))
    for start in range(0, len(idx), step):
        rows = idx[start : start + step]
        h = H[rows].double()
        score = const - 2.0 * (q[rows] + mu * h) @ codes.T
        best = torch.argmin(score, dim=1)
        at_h = torch.gather(score, 1, (H[rows].long() @ weights)[:, None])[:, 0]
        better = score[torch.arange(len(rows), device=q.device), best] < at_h
        Z[rows[better]] = codes[best[better]].to(torch.uint8)


def _box_qp(q, G, H, mu, Z0, max_iter=100, tol=1e-4):
    n, n_bits = q.shape
    Q = G + mu * torch.eye(n_bits, dtype=G.dtype, device=G.device)
    step = 1.0 / (2.0 * max(float(torch.linalg.eigvalsh(Q)[-1]), 1e-12))
    out = torch.clamp(Z0.double(), 0.0, 1.0)
    todo = torch.arange(n, device=q.device)
    z, y, b = out.clone(), out.clone(), q + mu * H.double()
    t = torch.ones((n, 1), dtype=torch.float64, device=q.device)
    for it in range(1, max_iter + 1):
        z_new = torch.clamp(y - (2.0 * step) * (y @ Q - b), 0.0, 1.0)
        diff = z_new - z
        restart = ((y - z_new) * diff).sum(1, keepdim=True) > 0
        t = torch.where(restart, 1.0, t)
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        y = z_new + ((t - 1.0) / t_new) * diff
        z, t = z_new, t_new
        if it % 10 == 0 or it == max_iter:
            out[todo] = z
            moving = torch.abs(diff).amax(1) > tol
            if not bool(moving.any()):
                break
            todo, z, y, b, t = todo[moving], z[moving], y[moving], b[moving], t[moving]
    return out


def _greedy_flips(Z0, q, G, H, mu):
    Z = Z0.double().clone()
    Hf = H.double()
    GZ = Z @ G
    diag = torch.diagonal(G)
    todo = torch.arange(len(Z), device=q.device)
    for _ in range(10 * Z.shape[1] + 10):
        if len(todo) == 0:
            break
        z = Z[todo]
        d = 1.0 - 2.0 * z
        gain = -2 * d * q[todo] + 2 * d * GZ[todo] + diag + mu * (1.0 + 2.0 * d * (z - Hf[todo]))
        best = torch.argmin(gain, dim=1)
        rows = torch.arange(len(todo), device=q.device)
        improve = gain[rows, best] < -1e-12 * (1.0 + torch.abs(q[todo]).sum(1))
        todo, best = todo[improve], best[improve]
        step = d[rows[improve], best]
        Z[todo, best] += step
        GZ[todo] += step[:, None] * G[best]
    return Z.to(torch.uint8)


def _zstep_relaxed(q, G, H, Z_prev, mu, h_err):
    Z = H.clone()
    idx = torch.nonzero(_search_radius(h_err, mu, q.shape[1]) > 0).flatten()
    if len(idx) == 0:
        return Z
    q_i, H_i, P_i = q[idx], H[idx], Z_prev[idx]
    rounded = (_box_qp(q_i, G, H_i, mu, P_i) > 0.5).to(torch.uint8)
    candidates = torch.stack([_greedy_flips(start, q_i, G, H_i, mu) for start in (H_i, P_i, rounded)])
    scores = torch.stack([_objective(c, q_i, G, H_i, mu) for c in candidates])
    best = torch.argmin(scores, dim=0)  # first minimum: h_n, then Z_prev, then the relaxation
    Z[idx] = candidates[best, torch.arange(len(idx), device=q.device)]
    return Z


# ---------------------------------------------------------------------------------- MAC state
class TorchMACState:
    """The arrays of one MAC run on a torch device; the interface of cbir.hashing.ba._MACState."""

    _SNAPSHOT = ("V", "W_aug", "H", "Z", "Z_fit", "A", "c", "G", "q", "xc_sq")

    def __init__(self, X: np.ndarray, C: float, device: torch.device, precond_block: int):
        self.name = f"{device} (torch)"
        self.C, self.device, self.precond_block = C, device, precond_block
        X32 = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
        self.X_aug = torch.cat([X32, torch.ones((len(X32), 1), dtype=torch.float32, device=device)], dim=1)
        self.X = self.X_aug[:, :-1]
        _, Q = torch.linalg.eigh((self.X_aug.T @ self.X_aug).double())
        self.Q = torch.flip(Q, dims=[1]).contiguous()
        self.X_rot = self.X_aug @ self.Q.float()
        self.X_rot_sq = self.X_rot * self.X_rot
        self.x_sq = (X32.double() ** 2).sum(1)
        self.Z_fit = None

    def init_from_linear(self, W, b):
        W_aug = torch.from_numpy(np.vstack([W, b[None]]).astype(np.float64)).to(self.device)
        V = self.Q.T @ W_aug
        XV = (self.X_rot @ V.float()).double()
        Y = torch.where(XV > 0, 1.0, -1.0).double()
        t = _line_search(torch.zeros_like(V), V, torch.zeros_like(XV), XV, Y, self.C)
        self.V = V * torch.where(t > 0, t, 1.0)
        self.W_aug = self.Q @ self.V
        self.H = (self.X_aug @ self.W_aug.float() > 0).to(torch.uint8)
        self.Z = self.H.clone()
        self.f_step()

    def h_step(self, tol, max_newton, max_cg, reject_worse=True):
        if self.Z_fit is None:
            bits = torch.arange(self.Z.shape[1], device=self.device)
        else:
            bits = torch.nonzero((self.Z != self.Z_fit).any(0)).flatten()
        if len(bits) == 0:
            return 0, 0, {"n_newton": 0, "n_cg": 0}
        Zb = self.Z[:, bits]
        V, info = fit_squared_hinge_svm(
            self.X_rot, 2.0 * Zb.double() - 1.0, self.C, self.V[:, bits], tol=tol, max_newton=max_newton, max_cg=max_cg,
            X_sq=self.X_rot_sq, precond_block=self.precond_block,
        )
        W_aug = self.Q @ V
        H_new = (self.X_aug @ W_aug.float() > 0).to(torch.uint8)
        if reject_worse:
            ok = (H_new != Zb).sum(0) <= (self.H[:, bits] != Zb).sum(0)
        else:
            ok = torch.ones(len(bits), dtype=torch.bool, device=self.device)
        kept = bits[ok]
        self.V[:, kept], self.W_aug[:, kept], self.H[:, kept] = V[:, ok], W_aug[:, ok], H_new[:, ok]
        if self.Z_fit is None:
            self.Z_fit = self.Z.clone()
        else:
            self.Z_fit[:, bits] = Zb
        return len(bits), int(ok.sum()), info

    def hash_codes(self) -> np.ndarray:
        return self.H.cpu().numpy()

    def weights(self) -> np.ndarray:
        return self.W_aug.cpu().numpy()

    def mismatches(self) -> int:
        return int((self.Z != self.H).sum())

    def f_step(self):
        Za = torch.cat([self.Z.double(), torch.ones((len(self.Z), 1), dtype=torch.float64, device=self.device)], dim=1)
        ZtX = (Za.float().T @ self.X).double()
        # minimum-norm solution as numpy's lstsq (a constant bit makes the system singular)
        sol = torch.linalg.pinv(Za.T @ Za, hermitian=True) @ ZtX
        self.A, self.c = sol[:-1].T.contiguous(), sol[-1].clone()
        self.G = self.A.T @ self.A
        self.q = (self.X @ self.A.float()).double() - self.c @ self.A
        self.xc_sq = self.x_sq - 2 * (self.X @ self.c.float()).double() + self.c @ self.c

    def recon(self, Z):
        Zf = Z.double()
        return torch.clamp(self.xc_sq - 2 * (Zf * self.q).sum(1) + ((Zf @ self.G) * Zf).sum(1), min=0.0)

    def recon_sum(self, Z) -> float:
        return float(self.recon(Z).sum())

    def e_q(self, mu) -> float:
        return self.recon_sum(self.Z) + mu * self.mismatches()

    def z_step(self, mu, exact_max_bits, style="best") -> int:
        if style != "best":
            raise ValueError(f"zstep {style!r} runs on the numpy path only (device 'cpu')")
        h_err = self.recon(self.H)
        if self.q.shape[1] <= exact_max_bits:
            Z = _zstep_exact(self.q, self.G, self.H, mu, h_err)
        else:
            Z = _zstep_relaxed(self.q, self.G, self.H, self.Z, mu, h_err)
        worse = _objective(Z, self.q, self.G, self.H, mu) > _objective(self.Z, self.q, self.G, self.H, mu)
        Z[worse] = self.Z[worse]
        changed = int((Z != self.Z).sum())
        self.Z = Z
        return changed

    def snapshot(self) -> dict:
        return {name: None if getattr(self, name) is None else getattr(self, name).clone() for name in self._SNAPSHOT}

    def restore(self, snapshot: dict) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)
