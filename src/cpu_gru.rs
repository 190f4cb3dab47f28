//! The CPU fast path of a GRU layer: SPEC's equations with a hand-written forward and
//! backward through time, plugged into candle's autograd as one custom op per layer.
//!
//! Why a custom op rather than a hand-written backward for the whole model: the GRU's
//! time loop is where candle's autograd is slow (every per-step intermediate is a graph
//! node, every op allocates, a slice's backward zero-pads to the whole tensor), while the
//! embedding, dropout, head, loss and optimizer are a handful of large operations that
//! autograd handles well. One op per layer keeps those, keeps `Gru::forward`'s contract
//! (the trainer, evaluation and generation do not change), and keeps the generic path
//! as the reference the fast one is tested against.
//!
//! The op takes the input `[N, T, I]`, the initial state `[N, H]` and the layer's weights
//! packed into one vector (`weight_x`, `weight_h`, `bias`, each flattened), and returns
//! every step's state `[N, T, H]`. Its forward computes the input half of all gates with
//! one matrix product, then per step one product for `z` and `r` followed by one fused
//! pass computing both gates, and one product for the candidate followed by one fused
//! pass computing `h̃_t` and `h_t`; it keeps `z`, `r` and `h̃` for the backward. The
//! backward walks time in reverse with two products per step, then forms each weight
//! gradient with one large product over all steps. The batch is cut into blocks of rows
//! whose time loops run side by side on their own threads.
//!
//! Buffers are row-major with rows in (n, t) order, as the input is, so each per-step
//! slice is a strided matrix the products read in place.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor, WithDType};
use gemm::Parallelism;

/// The sizes of one layer's sequence: N, T, I, H.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// N: batch.
    pub n: usize,
    /// T: time steps.
    pub t: usize,
    /// I: input features.
    pub i: usize,
    /// H: hidden units.
    pub h: usize,
}

/// Floating-point types the fast path runs in: f32 for speed, f64 for gradient checks.
pub trait Real: WithDType {
    /// σ(x).
    fn sigmoid(self) -> Self;
    /// tanh(x).
    fn tanh_(self) -> Self;
}

impl Real for f32 {
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
    fn tanh_(self) -> Self {
        self.tanh()
    }
}

impl Real for f64 {
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
    fn tanh_(self) -> Self {
        self.tanh()
    }
}

/// A strided matrix over a slice: element (r, c) is `data[offset + r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> View<'a, T> {
    /// The row-major `rows × cols` matrix starting at `offset`, rows `rs` apart.
    pub(crate) fn rows(data: &'a [T], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose, without copying.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Panics unless every element lies inside `data`, which makes the raw-pointer product sound.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// Multiply-adds from which a product is split across threads (measured: S's per-step
/// products of 32×256×512 run faster on one thread, M's of 64×512×1024 on two).
const PARALLEL_WORK: usize = 1 << 26;

/// candle's thread count, asked once: asking reads /proc on every call.
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// `dst (rows × cols, row-major from dst_offset, rows dst_rs apart) [+]= lhs · rhs`.
pub(crate) fn matmul<T: Real>(
    dst: &mut [T],
    dst_offset: usize,
    dst_rs: usize,
    lhs: View<T>,
    rhs: View<T>,
    accumulate: bool,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions differ");
    lhs.check();
    rhs.check();
    if m > 0 && n > 0 {
        let last = dst_offset + (m - 1) * dst_rs + (n - 1);
        assert!(last < dst.len(), "destination out of bounds");
    }
    // Threads pay off only when there is enough work to share: small per-step products
    // run faster on one thread than with two that wait on each other.
    let parallelism = if m * n * k >= PARALLEL_WORK {
        Parallelism::Rayon(threads())
    } else {
        Parallelism::None
    };
    // SAFETY: every element the product touches was checked to lie inside its slice, and
    // `dst` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_offset),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// What the forward keeps for the backward: the gates of every step, `[N, T, H]` each.
pub(crate) struct Saved<T> {
    z: Vec<T>,
    r: Vec<T>,
    h_cand: Vec<T>,
}

/// One GRU layer over a whole sequence, as a candle op with its own backward.
pub struct GruSequence {
    sizes: Sizes,
    saved: Mutex<Option<SavedAny>>,
}

enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

impl GruSequence {
    /// The op for a sequence of these sizes.
    pub fn new(sizes: Sizes) -> Self {
        Self {
            sizes,
            saved: Mutex::new(None),
        }
    }
}

/// The packed weights split into `W` `[3H, I]`, `U` `[3H, H]` and `b` `[3H]`.
fn unpack<T>(w: &[T], s: Sizes) -> (&[T], &[T], &[T]) {
    let (wx, rest) = w.split_at(3 * s.h * s.i);
    let (wh, b) = rest.split_at(3 * s.h * s.h);
    (wx, wh, b)
}

/// How many blocks of batch rows to run side by side: the recurrence of one sequence
/// never reads another's, so each thread runs the whole time loop for its own rows and
/// the threads meet only at the end. Small batches stay on one thread.
/// Large batches are cut into at least two blocks even on one core, so every machine
/// runs (and tests) the same code.
fn row_blocks(s: Sizes) -> usize {
    if s.n * s.t * s.h < BLOCK_WORK {
        1
    } else {
        threads().max(2).min(s.n)
    }
}

/// Batch × time × hidden size from which the batch is cut into blocks run side by side.
pub const BLOCK_WORK: usize = 1 << 15;

/// Runs `work` on every part, the parts on threads of their own but the first.
fn run_parts<P: Send>(parts: Vec<P>, work: impl Fn(P) + Sync) {
    std::thread::scope(|scope| {
        let mut parts = parts.into_iter();
        let first = parts.next();
        for part in parts {
            let work = &work;
            scope.spawn(move || work(part));
        }
        if let Some(part) = first {
            work(part);
        }
    });
}

/// The rows of a buffer laid out `[N, per_row]`, cut into blocks of `rows` batch rows.
fn blocks<T>(data: &[T], per_row: usize, rows: usize) -> std::slice::Chunks<'_, T> {
    data.chunks(rows * per_row)
}

/// Mutable [`blocks`].
fn blocks_mut<T>(data: &mut [T], per_row: usize, rows: usize) -> std::slice::ChunksMut<'_, T> {
    data.chunks_mut(rows * per_row)
}

/// h_{t-1} of row `nn`, unit `j`, at `step`: the initial state `h0` `[n, H]` at step 0,
/// else the previous step's output in `ys` `[n, T, H]`.
fn h_prev<T: Copy>(
    h0: &[T],
    ys: &[T],
    (t, h): (usize, usize),
    nn: usize,
    step: usize,
    j: usize,
) -> T {
    if step == 0 {
        h0[nn * h + j]
    } else {
        ys[(nn * t + step - 1) * h + j]
    }
}

/// One block of batch rows of the forward pass.
struct ForwardRows<'a, T> {
    gx: &'a [T],         // [n, T, 3H]
    h0: &'a [T],         // [n, H]
    ys: &'a mut [T],     // [n, T, H]
    z: &'a mut [T],      // [n, T, H]
    r: &'a mut [T],      // [n, T, H]
    h_cand: &'a mut [T], // [n, T, H]
}

/// SPEC's equations over the sequence; returns every state `[N, T, H]` and the gates.
pub(crate) fn forward<T: Real>(xs: &[T], h0: &[T], w: &[T], s: Sizes) -> (Vec<T>, Saved<T>) {
    let Sizes { n, t, i, h } = s;
    let (wx, wh, b) = unpack(w, s);
    let rows = n * t;
    // gx = X Wᵀ + b for every (n, t) at once: [N·T, 3H].
    let mut gx = vec![T::from_f64(0.0); rows * 3 * h];
    matmul(
        &mut gx,
        0,
        3 * h,
        View::rows(xs, 0, rows, i, i),
        View::rows(wx, 0, 3 * h, i, i).t(),
        false,
    );
    for row in gx.chunks_exact_mut(3 * h) {
        for (g, &bias) in row.iter_mut().zip(b) {
            *g += bias;
        }
    }
    let zeros = || vec![T::from_f64(0.0); rows * h];
    let (mut ys, mut z, mut r, mut h_cand) = (zeros(), zeros(), zeros(), zeros());
    let per = n.div_ceil(row_blocks(s));
    let parts = blocks(&gx, t * 3 * h, per)
        .zip(blocks(h0, h, per))
        .zip(blocks_mut(&mut ys, t * h, per))
        .zip(blocks_mut(&mut z, t * h, per))
        .zip(blocks_mut(&mut r, t * h, per))
        .zip(blocks_mut(&mut h_cand, t * h, per))
        .map(|(((((gx, h0), ys), z), r), h_cand)| ForwardRows {
            gx,
            h0,
            ys,
            z,
            r,
            h_cand,
        })
        .collect();
    run_parts(parts, |part| forward_rows(part, wh, t, h));
    (ys, Saved { z, r, h_cand })
}

/// The time loop of the forward pass for one block of batch rows.
fn forward_rows<T: Real>(p: ForwardRows<T>, wh: &[T], t: usize, h: usize) {
    let n = p.h0.len() / h;
    let zero = T::from_f64(0.0);
    // The per-step products are computed transposed, U · h_{t-1}ᵀ, so the weight matrix
    // is the left operand: the product then reads it in place instead of repacking it.
    let mut gh_zr = vec![zero; 2 * h * n]; // [2H, n]: (U_z; U_r) h_{t-1}ᵀ
    let mut rh = vec![zero; n * h]; // [n, H]: r_t ⊙ h_{t-1}
    let mut gh_h = vec![zero; h * n]; // [H, n]: U_h (r_t ⊙ h_{t-1})ᵀ
    let one = T::from_f64(1.0);
    for step in 0..t {
        let prev = if step == 0 {
            View::rows(p.h0, 0, n, h, h)
        } else {
            View::rows(&*p.ys, (step - 1) * h, n, h, t * h)
        };
        matmul(
            &mut gh_zr,
            0,
            n,
            View::rows(wh, 0, 2 * h, h, h),
            prev.t(),
            false,
        );
        for nn in 0..n {
            let g = (nn * t + step) * 3 * h;
            let at = (nn * t + step) * h;
            for j in 0..h {
                let hp = h_prev(p.h0, &*p.ys, (t, h), nn, step, j);
                let z = (p.gx[g + j] + gh_zr[j * n + nn]).sigmoid(); // z_t
                let r = (p.gx[g + h + j] + gh_zr[(h + j) * n + nn]).sigmoid(); // r_t
                p.z[at + j] = z;
                p.r[at + j] = r;
                rh[nn * h + j] = r * hp;
            }
        }
        matmul(
            &mut gh_h,
            0,
            n,
            View::rows(wh, 2 * h * h, h, h, h),
            View::rows(&rh, 0, n, h, h).t(),
            false,
        );
        for nn in 0..n {
            let g = (nn * t + step) * 3 * h;
            let at = (nn * t + step) * h;
            for j in 0..h {
                let hp = h_prev(p.h0, &*p.ys, (t, h), nn, step, j);
                let h_cand = (p.gx[g + 2 * h + j] + gh_h[j * n + nn]).tanh_(); // h̃_t
                let z = p.z[at + j];
                p.h_cand[at + j] = h_cand;
                p.ys[at + j] = (one - z) * hp + z * h_cand; // h_t
            }
        }
    }
}

/// One block of batch rows of the backward pass through time.
struct BackwardRows<'a, T> {
    h0: &'a [T],      // [n, H]
    ys: &'a [T],      // [n, T, H]
    dys: &'a [T],     // [n, T, H]
    z: &'a [T],       // [n, T, H]
    r: &'a [T],       // [n, T, H]
    h_cand: &'a [T],  // [n, T, H]
    dgx: &'a mut [T], // [n, T, 3H]
    dh0: &'a mut [T], // [n, H]
}

/// Gradients of the loss with respect to the input, the initial state and the packed
/// weights, given its gradient `dys` with respect to every state.
fn backward<T: Real>(
    xs: &[T],
    h0: &[T],
    w: &[T],
    ys: &[T],
    dys: &[T],
    saved: &Saved<T>,
    s: Sizes,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Sizes { n, t, i, h } = s;
    let (wx, wh, _) = unpack(w, s);
    let rows = n * t;
    // ∂loss/∂(gate pre-activations) for every (n, t): [N·T, 3H] in the order z, r, h.
    let mut dgx = vec![T::from_f64(0.0); rows * 3 * h];
    let mut dh0 = vec![T::from_f64(0.0); n * h];
    let per = n.div_ceil(row_blocks(s));
    let parts = blocks(h0, h, per)
        .zip(blocks(ys, t * h, per))
        .zip(blocks(dys, t * h, per))
        .zip(blocks(&saved.z, t * h, per))
        .zip(blocks(&saved.r, t * h, per))
        .zip(blocks(&saved.h_cand, t * h, per))
        .zip(blocks_mut(&mut dgx, t * 3 * h, per))
        .zip(blocks_mut(&mut dh0, h, per))
        .map(
            |(((((((h0, ys), dys), z), r), h_cand), dgx), dh0)| BackwardRows {
                h0,
                ys,
                dys,
                z,
                r,
                h_cand,
                dgx,
                dh0,
            },
        )
        .collect();
    run_parts(parts, |part| backward_rows(part, wh, t, h));

    // Weight gradients, each one product over all N·T rows.
    let mut dw = vec![T::from_f64(0.0); w.len()];
    let dgx_all = |cols: usize, offset: usize| View::rows(&dgx, offset, rows, cols, 3 * h);
    matmul(
        &mut dw,
        0,
        i,
        dgx_all(3 * h, 0).t(),
        View::rows(xs, 0, rows, i, i),
        false,
    ); // ∂W = ∂Aᵀ X
       // h_{t-1} for every row, then r ⊙ h_{t-1}.
    let mut prev = vec![T::from_f64(0.0); rows * h];
    for nn in 0..n {
        prev[nn * t * h..nn * t * h + h].copy_from_slice(&h0[nn * h..(nn + 1) * h]);
        prev[nn * t * h + h..(nn + 1) * t * h]
            .copy_from_slice(&ys[nn * t * h..(nn + 1) * t * h - h]);
    }
    let u_offset = 3 * h * i;
    matmul(
        &mut dw,
        u_offset,
        h,
        dgx_all(2 * h, 0).t(),
        View::rows(&prev, 0, rows, h, h),
        false,
    ); // ∂(U_z; U_r)
    for (p, &r) in prev.iter_mut().zip(&saved.r) {
        *p *= r;
    }
    matmul(
        &mut dw,
        u_offset + 2 * h * h,
        h,
        dgx_all(h, 2 * h).t(),
        View::rows(&prev, 0, rows, h, h),
        false,
    ); // ∂U_h
    let b_offset = u_offset + 3 * h * h;
    for row in dgx.chunks_exact(3 * h) {
        for (db, &d) in dw[b_offset..].iter_mut().zip(row) {
            *db += d;
        }
    }
    let mut dxs = vec![T::from_f64(0.0); rows * i];
    matmul(
        &mut dxs,
        0,
        i,
        View::rows(&dgx, 0, rows, 3 * h, 3 * h),
        View::rows(wx, 0, 3 * h, i, i),
        false,
    ); // ∂X = ∂A W
    (dxs, dh0, dw)
}

/// The time loop of the backward pass for one block of batch rows, in reverse.
fn backward_rows<T: Real>(p: BackwardRows<T>, wh: &[T], t: usize, h: usize) {
    let n = p.h0.len() / h;
    let zero = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    // Transposed, [H, n], as in the forward pass: the weights are the left operand, and
    // a row-major copy of Uᵀ [H, 3H] lets the products read it in place every step.
    let mut u_t = vec![zero; h * 3 * h];
    for (k, row) in wh.chunks_exact(h).enumerate() {
        for (j, &u) in row.iter().enumerate() {
            u_t[j * 3 * h + k] = u;
        }
    }
    let mut dh = vec![zero; h * n]; // ∂loss/∂h_t flowing back from step t + 1
    let mut dh_prev = vec![zero; h * n];
    let mut d_rh = vec![zero; h * n];
    for step in (0..t).rev() {
        for nn in 0..n {
            let at = (nn * t + step) * h;
            let g = (nn * t + step) * 3 * h;
            for j in 0..h {
                let d = dh[j * n + nn] + p.dys[at + j];
                let (z, h_cand, hp) = (
                    p.z[at + j],
                    p.h_cand[at + j],
                    h_prev(p.h0, p.ys, (t, h), nn, step, j),
                );
                // h_t = (1 − z) h_{t-1} + z h̃
                let dz = d * (h_cand - hp);
                let d_cand = d * z;
                dh_prev[j * n + nn] = d * (one - z);
                p.dgx[g + 2 * h + j] = d_cand * (one - h_cand * h_cand); // through tanh
                p.dgx[g + j] = dz * z * (one - z); // through σ
            }
        }
        // a_h = … + (r ⊙ h_{t-1}) U_hᵀ, so ∂(r ⊙ h_{t-1})ᵀ = U_hᵀ ∂a_hᵀ.
        let da_h = View::rows(&*p.dgx, step * 3 * h + 2 * h, n, h, t * 3 * h);
        matmul(
            &mut d_rh,
            0,
            n,
            View::rows(&u_t, 2 * h, h, h, 3 * h),
            da_h.t(),
            false,
        );
        for nn in 0..n {
            let at = (nn * t + step) * h;
            let g = (nn * t + step) * 3 * h;
            for j in 0..h {
                let (r, hp) = (p.r[at + j], h_prev(p.h0, p.ys, (t, h), nn, step, j));
                let dr = d_rh[j * n + nn] * hp;
                p.dgx[g + h + j] = dr * r * (one - r);
                dh_prev[j * n + nn] += d_rh[j * n + nn] * r;
            }
        }
        // a_z, a_r = … + h_{t-1} (U_z; U_r)ᵀ.
        let da_zr = View::rows(&*p.dgx, step * 3 * h, n, 2 * h, t * 3 * h);
        matmul(
            &mut dh_prev,
            0,
            n,
            View::rows(&u_t, 0, h, 2 * h, 3 * h),
            da_zr.t(),
            true,
        );
        std::mem::swap(&mut dh, &mut dh_prev);
    }
    for nn in 0..n {
        for j in 0..h {
            p.dh0[nn * h + j] = dh[j * n + nn];
        }
    }
}

/// The contiguous data of a CPU storage.
fn data<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the fast GRU needs contiguous inputs")
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

impl GruSequence {
    fn run_forward<T: Real>(
        &self,
        xs: (&CpuStorage, &Layout),
        h0: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        wrap: fn(Saved<T>) -> SavedAny,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.sizes;
        let (ys, saved) = forward(
            data::<T>(xs.0, xs.1)?,
            data::<T>(h0.0, h0.1)?,
            data::<T>(w.0, w.1)?,
            s,
        );
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(wrap(saved));
        Ok((T::to_cpu_storage_owned(ys), Shape::from((s.n, s.t, s.h))))
    }

    fn run_backward<T: Real>(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        w: &Tensor,
        ys: &Tensor,
        dys: &Tensor,
        saved: &Saved<T>,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let s = self.sizes;
        // Read the tensors in place: copying them would add a few N·T·H buffers to the
        // peak memory of every backward pass.
        let tensors = [xs, h0, w, ys, dys]
            .into_iter()
            .map(Tensor::contiguous)
            .collect::<Result<Vec<_>>>()?;
        let guards: Vec<_> = tensors.iter().map(Tensor::storage_and_layout).collect();
        let mut slices: Vec<&[T]> = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            match &**storage {
                Storage::Cpu(cpu) => slices.push(data::<T>(cpu, layout)?),
                _ => candle_core::bail!("the fast GRU's backward needs CPU tensors"),
            }
        }
        let (dxs, dh0, dw) = backward(
            slices[0], slices[1], slices[2], slices[3], slices[4], saved, s,
        );
        let device = xs.device();
        Ok((
            Some(Tensor::from_vec(dxs, (s.n, s.t, s.i), device)?),
            Some(Tensor::from_vec(dh0, (s.n, s.h), device)?),
            Some(Tensor::from_vec(dw, w.shape(), device)?),
        ))
    }
}

impl CustomOp3 for GruSequence {
    fn name(&self) -> &'static str {
        "chargru-gru-sequence"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1 {
            CpuStorage::F32(_) => {
                self.run_forward::<f32>((s1, l1), (s2, l2), (s3, l3), SavedAny::F32)
            }
            CpuStorage::F64(_) => {
                self.run_forward::<f64>((s1, l1), (s2, l2), (s3, l3), SavedAny::F64)
            }
            _ => candle_core::bail!("the fast GRU runs in f32 or f64"),
        }
    }

    fn bwd(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        w: &Tensor,
        ys: &Tensor,
        dys: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        match saved.as_ref() {
            Some(SavedAny::F32(saved)) => self.run_backward(xs, h0, w, ys, dys, saved),
            Some(SavedAny::F64(saved)) => self.run_backward(xs, h0, w, ys, dys, saved),
            None => candle_core::bail!("the fast GRU's backward ran before its forward"),
        }
    }
}
