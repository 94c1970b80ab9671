//! The inner tiles of `cpu::qlinear`: `MR` tokens x one panel of output rows, over a panel of
//! weights laid out beforehand and reused by every tile of tokens (outer-product form: one
//! weight vector load feeds `MR` multiply-adds, so the loop is bound by arithmetic, not by
//! loads). Each ISA has its own panel layout ([`Isa::panel_rows`] rows):
//! - int (activation-quantized specs): `out[t][g][r] = sum over group g of a[t][k] * e[r][k]`
//!   with `a` unsigned activation codes and `e` signed weight codes, exact in i32 on every
//!   ISA (AVX-512 VNNI `vpdpbusd` on u8 x i8; AVX2 `vpmaddwd` on both widened to i16;
//!   portable scalar), so all three give the same integers.
//! - f32 (weight-only specs): `out[t][r] = sum_k x[t][k] * w[r][k]`, one fused multiply-add
//!   per `k` in increasing `k` (AVX-512F and AVX2 FMA vectors across rows; the portable path
//!   `f32::mul_add`), so all three give the same bits.

use super::qlinear::Isa;

/// Tokens per tile (token counts are padded to a multiple of it).
pub const MR: usize = 8;

impl Isa {
    /// Output rows per weight panel.
    pub fn panel_rows(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            _ => 16,
        }
    }
}

/// Integer tile. `a`: `MR` rows of `kp` u8 codes. `panel`: the ISA's layout (see
/// [`int_panel_index`]); `bounds[g]..bounds[g + 1]` are group `g`'s inputs (multiples of 4).
/// `out`: `[MR][groups][nr]` i32.
pub fn int_tile(isa: Isa, a: &[u8], panel: &[i8], kp: usize, bounds: &[usize], out: &mut [i32]) {
    let nr = isa.panel_rows();
    let groups = bounds.len() - 1;
    assert!(a.len() >= MR * kp && panel.len() >= nr * kp && out.len() >= MR * groups * nr);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: these ISAs are only chosen when the CPU reports their features
        // (`Isa::detect`), and the slice lengths are checked above.
        Isa::Avx512 => return unsafe { avx512::int_tile(a, panel, kp, bounds, out) },
        Isa::Avx2 => return unsafe { avx2::int_tile(a, panel, kp, bounds, out) },
        Isa::Portable => {}
    }
    for t in 0..MR {
        for g in 0..groups {
            for r in 0..nr {
                let w = &panel[r * kp..(r + 1) * kp];
                let x = &a[t * kp..(t + 1) * kp];
                let s: i32 = (bounds[g]..bounds[g + 1])
                    .map(|k| x[k] as i32 * w[k] as i32)
                    .sum();
                out[(t * groups + g) * nr + r] = s;
            }
        }
    }
}

/// What a fused int tile needs to finish its outputs: per token (as many as the tile has)
/// the activation zero point and scale, per row `c1` (the weight code sums), the weight
/// scale and the bias.
pub struct FusedOut<'a> {
    pub za: &'a [i32],
    pub sa: &'a [f32],
    pub c1: &'a [i32],
    pub sw: &'a [f32],
    pub b: &'a [f32],
}

/// [`int_tile`] for one group and symmetric codes, finishing in registers:
/// `y[t][r] = (s - za c1) as f32 * sw * sa + b` for the tile's tokens (`o.za.len()`) and the
/// panel's first `rows` rows (a partial last panel stores under a mask), row `t` at
/// `y[t * n..]`. AVX-512 only (other ISAs run [`int_tile`] and the separate epilogue, whose
/// operations these are).
#[allow(clippy::too_many_arguments)]
pub fn int_tile_fused(
    isa: Isa,
    a: &[u8],
    panel: &[i8],
    kp: usize,
    bounds: &[usize],
    o: &FusedOut<'_>,
    y: &mut [std::mem::MaybeUninit<f32>],
    n: usize,
    rows: usize,
) {
    let nr = isa.panel_rows();
    let tokens = o.za.len();
    assert!(a.len() >= MR * kp && panel.len() >= nr * kp && bounds.len() == 2);
    assert!((1..=MR).contains(&tokens) && o.sa.len() == tokens);
    assert!(o.c1.len() >= nr && o.sw.len() >= nr && o.b.len() >= nr);
    assert!((1..=nr).contains(&rows) && n >= rows && y.len() >= (tokens - 1) * n + rows);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512 is only chosen when the CPU reports it (`Isa::detect`); the
        // lengths are checked above.
        return unsafe { avx512::int_tile_fused(a, panel, kp, bounds[1], o, y, n, rows) };
    }
    unreachable!("fused int tile on {isa:?}");
}

/// What group-scaled int tiles need to finish their outputs ([`int_tile_groups`]): the
/// activation scales `[tokens][groups]` (padded to whole tiles), per group and row the
/// weight starting sums `c1 = -128 E` and scales `[groups][nr]`, and the bias `[nr]`.
pub struct GroupOut<'a> {
    pub sa: &'a [f32],
    pub c1: &'a [i32],
    pub sw: &'a [f32],
    pub b: &'a [f32],
    /// Nibble panels (`IntPanels`' `nibbles`): the zero points `[groups][nr]` and the
    /// activation code sums `[tokens][groups]` (padded as `sa`).
    pub nibbles: Option<(&'a [f32], &'a [f32])>,
}

/// [`int_tile`]s for activation groups with centred weight codes (`cpu::qgroups`), finishing
/// in registers: `y[t][r] = b + sum_g (s + c1) as f32 * (sw sa)` with `c1 = -128 E`, one
/// fused multiply-add per group in increasing order (the operations of `qgroups`' epilogue,
/// so the same bits), for `tokens` tokens (`a`
/// and `o.sa` padded to whole tiles of `MR`) and the panel's first `rows` rows (a partial
/// last panel stores under a mask), row `t` at `y[t * n..]`. AVX-512 only.
#[allow(clippy::too_many_arguments)]
pub fn int_tile_groups(
    isa: Isa,
    a: &[u8],
    panel: &[i8],
    kp: usize,
    bounds: &[usize],
    o: &GroupOut<'_>,
    tokens: usize,
    y: &mut [std::mem::MaybeUninit<f32>],
    n: usize,
    rows: usize,
) {
    let nr = isa.panel_rows();
    let groups = bounds.len() - 1;
    let padded = tokens.next_multiple_of(MR);
    let panel_bytes = if o.nibbles.is_some() {
        nr * kp / 2
    } else {
        nr * kp
    };
    assert!(a.len() >= padded * kp && panel.len() >= panel_bytes && groups >= 1);
    if let Some((zf, asum)) = o.nibbles {
        assert!(zf.len() >= groups * nr && asum.len() >= padded * groups);
    }
    assert!(bounds.windows(2).all(|b| b[0] <= b[1]) && bounds[groups] <= kp);
    assert!(tokens >= 1 && o.sa.len() >= padded * groups);
    assert!(o.c1.len() >= groups * nr && o.sw.len() >= groups * nr && o.b.len() >= nr);
    assert!((1..=nr).contains(&rows) && n >= rows && y.len() >= (tokens - 1) * n + rows);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512 is only chosen when the CPU reports it (`Isa::detect`); the
        // lengths are checked above.
        return unsafe {
            match o.nibbles.is_some() {
                true => {
                    avx512::int_tile_groups::<true>(a, panel, kp, bounds, o, tokens, y, n, rows)
                }
                false => {
                    avx512::int_tile_groups::<false>(a, panel, kp, bounds, o, tokens, y, n, rows)
                }
            }
        };
    }
    unreachable!("group int tile on {isa:?}");
}

/// Where code `k` of panel row `r` goes in the ISA's int panel (`kp` codes per row).
pub fn int_panel_index(isa: Isa, r: usize, k: usize, kp: usize) -> usize {
    match isa {
        // [k / 4][32 rows][4]: one 64-byte vector holds 16 rows' 4 codes for `vpdpbusd`.
        Isa::Avx512 => (k / 4) * 32 * 4 + r * 4 + k % 4,
        // [k / 2][16 rows][2]: widened to i16, one 32-byte vector holds 8 rows' 2 codes.
        Isa::Avx2 => (k / 2) * 16 * 2 + r * 2 + k % 2,
        Isa::Portable => r * kp + k,
    }
}

/// Float tile: `x`: `MR` rows of `kp` f32 (padding 0); `panel`: `[kp][nr]` f32 (row `r`'s
/// value at `k` is `panel[k * nr + r]`); `out`: `[MR][nr]`.
pub fn f32_tile(isa: Isa, x: &[f32], panel: &[f32], kp: usize, out: &mut [f32]) {
    let nr = isa.panel_rows();
    assert!(x.len() >= MR * kp && panel.len() >= nr * kp && out.len() >= MR * nr);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: as in `int_tile`.
        Isa::Avx512 => return unsafe { avx512::f32_tile(x, panel, kp, out) },
        Isa::Avx2 => return unsafe { avx2::f32_tile(x, panel, kp, out) },
        Isa::Portable => {}
    }
    for t in 0..MR {
        for r in 0..nr {
            let mut acc = 0f32;
            for k in 0..kp {
                acc = x[t * kp + k].mul_add(panel[k * nr + r], acc);
            }
            out[t * nr + r] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::MR;

    /// `MR` token rows of u8 codes (`a`, rows `kp` apart) against one 32-row int panel over
    /// `k0..k1` (a multiple of 4 long): 32 i32 sums per token, two vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot_range(
        ap: *const u8,
        wp: *const i8,
        kp: usize,
        k0: usize,
        k1: usize,
    ) -> [[__m512i; 2]; MR] {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        let mut k = k0;
        while k < k1 {
            let w = wp.add(k * 32);
            let w0 = _mm512_loadu_si512(w as *const _);
            let w1 = _mm512_loadu_si512(w.add(64) as *const _);
            for (t, acc) in acc.iter_mut().enumerate() {
                let q = (ap.add(t * kp + k) as *const i32).read_unaligned();
                let b = _mm512_set1_epi32(q);
                acc[0] = _mm512_dpbusd_epi32(acc[0], b, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], b, w1);
            }
            k += 4;
        }
        acc
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn int_tile(a: &[u8], panel: &[i8], kp: usize, bounds: &[usize], out: &mut [i32]) {
        let groups = bounds.len() - 1;
        let (ap, wp) = (a.as_ptr(), panel.as_ptr());
        for g in 0..groups {
            let acc = dot_range(ap, wp, kp, bounds[g], bounds[g + 1]);
            for (t, acc) in acc.iter().enumerate() {
                let o = out.as_mut_ptr().add((t * groups + g) * 32);
                _mm512_storeu_si512(o as *mut _, acc[0]);
                _mm512_storeu_si512(o.add(16) as *mut _, acc[1]);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn int_tile_fused(
        a: &[u8],
        panel: &[i8],
        kp: usize,
        kend: usize,
        o: &super::FusedOut<'_>,
        y: &mut [std::mem::MaybeUninit<f32>],
        n: usize,
        rows: usize,
    ) {
        let (ap, wp) = (a.as_ptr(), panel.as_ptr());
        let acc = dot_range(ap, wp, kp, 0, kend);
        let (c1p, swp, bp) = (o.c1.as_ptr(), o.sw.as_ptr(), o.b.as_ptr());
        let c1 = [
            _mm512_loadu_si512(c1p as *const _),
            _mm512_loadu_si512(c1p.add(16) as *const _),
        ];
        let sw = [_mm512_loadu_ps(swp), _mm512_loadu_ps(swp.add(16))];
        let b = [_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16))];
        let yp = y.as_mut_ptr() as *mut f32;
        // Rows stored per half: all 16, or the first `rows - 16 h` under a mask.
        let mask = |h: usize| -> __mmask16 {
            let valid = rows.saturating_sub(16 * h).min(16);
            ((1u32 << valid) - 1) as __mmask16
        };
        let masks = [mask(0), mask(1)];
        for (t, acc) in acc.iter().enumerate().take(o.za.len()) {
            let za = _mm512_set1_epi32(o.za[t]);
            let sa = _mm512_set1_ps(o.sa[t]);
            for h in 0..2 {
                // Wrapping i32 as in `epilogue`, then the same three f32 roundings.
                let dot = _mm512_sub_epi32(acc[h], _mm512_mullo_epi32(za, c1[h]));
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), sw[h]);
                let v = _mm512_add_ps(_mm512_mul_ps(v, sa), b[h]);
                match masks[h] {
                    0xffff => _mm512_storeu_ps(yp.add(t * n + 16 * h), v),
                    0 => {}
                    m => _mm512_mask_storeu_ps(yp.add(t * n + 16 * h), m, v),
                }
            }
        }
    }

    /// [`super::int_tile_groups`] on byte panels (`NIB` false) or nibble panels (`NIB` true: each
    /// 64-byte step holds both 16-row halves, and each sum is corrected by `- z A`, exact in
    /// f32 as every term is an integer below 2^24).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn int_tile_groups<const NIB: bool>(
        a: &[u8],
        panel: &[i8],
        kp: usize,
        bounds: &[usize],
        o: &super::GroupOut<'_>,
        tokens: usize,
        y: &mut [std::mem::MaybeUninit<f32>],
        n: usize,
        rows: usize,
    ) {
        let (zfp, asp) = match o.nibbles {
            Some((zf, asum)) => (zf.as_ptr(), asum.as_ptr()),
            None => (std::ptr::null(), std::ptr::null()),
        };
        let low = _mm512_set1_epi8(0x0f);
        // Half a tile at a time: 4 tokens x 32 rows are 8 integer and 8 float accumulators.
        const H: usize = MR / 2;
        let groups = bounds.len() - 1;
        let (ap, wp) = (a.as_ptr(), panel.as_ptr());
        let (c1p, swp, bp, sap) = (o.c1.as_ptr(), o.sw.as_ptr(), o.b.as_ptr(), o.sa.as_ptr());
        let b = [_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16))];
        let mask = |h: usize| -> __mmask16 {
            let valid = rows.saturating_sub(16 * h).min(16);
            ((1u32 << valid) - 1) as __mmask16
        };
        let masks = [mask(0), mask(1)];
        let yp = y.as_mut_ptr() as *mut f32;
        for t0 in (0..tokens).step_by(H) {
            let mut f = [b; H];
            for g in 0..groups {
                // Each sum starts at `c1 = -128 E`, so it ends at `s + c1` (wrapping, exact).
                let init = [
                    _mm512_loadu_si512(c1p.add(g * 32) as *const _),
                    _mm512_loadu_si512(c1p.add(g * 32 + 16) as *const _),
                ];
                let mut acc = [init; H];
                let mut k = bounds[g];
                while k < bounds[g + 1] {
                    let (w0, w1) = if NIB {
                        let v = _mm512_loadu_si512(wp.add(k * 16) as *const _);
                        let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                        (_mm512_and_si512(v, low), hi)
                    } else {
                        let w = wp.add(k * 32);
                        let w0 = _mm512_loadu_si512(w as *const _);
                        (w0, _mm512_loadu_si512(w.add(64) as *const _))
                    };
                    for (t, acc) in acc.iter_mut().enumerate() {
                        let q = (ap.add((t0 + t) * kp + k) as *const i32).read_unaligned();
                        let q = _mm512_set1_epi32(q);
                        acc[0] = _mm512_dpbusd_epi32(acc[0], q, w0);
                        acc[1] = _mm512_dpbusd_epi32(acc[1], q, w1);
                    }
                    k += 4;
                }
                let sw = [
                    _mm512_loadu_ps(swp.add(g * 32)),
                    _mm512_loadu_ps(swp.add(g * 32 + 16)),
                ];
                let zf = if NIB {
                    [
                        _mm512_loadu_ps(zfp.add(g * 32)),
                        _mm512_loadu_ps(zfp.add(g * 32 + 16)),
                    ]
                } else {
                    [_mm512_setzero_ps(); 2]
                };
                for (t, (acc, f)) in acc.iter().zip(f.iter_mut()).enumerate() {
                    let sa = _mm512_set1_ps(*sap.add((t0 + t) * groups + g));
                    let asum = if NIB {
                        _mm512_set1_ps(*asp.add((t0 + t) * groups + g))
                    } else {
                        _mm512_setzero_ps()
                    };
                    for h in 0..2 {
                        let s = _mm512_mul_ps(sw[h], sa);
                        let mut v = _mm512_cvtepi32_ps(acc[h]);
                        if NIB {
                            // `sum a c + 128 (z n - C) - z A = sum (a - 128)(c - z)`, exactly.
                            v = _mm512_fnmadd_ps(zf[h], asum, v);
                        }
                        f[h] = _mm512_fmadd_ps(v, s, f[h]);
                    }
                }
            }
            for (t, f) in f.iter().enumerate().take(tokens - t0) {
                // (the last tile's padding tokens are computed, not stored)
                for h in 0..2 {
                    let p = yp.add((t0 + t) * n + 16 * h);
                    match masks[h] {
                        0xffff => _mm512_storeu_ps(p, f[h]),
                        0 => {}
                        m => _mm512_mask_storeu_ps(p, m, f[h]),
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32_tile(x: &[f32], panel: &[f32], kp: usize, out: &mut [f32]) {
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for k in 0..kp {
            let w0 = _mm512_loadu_ps(wp.add(k * 32));
            let w1 = _mm512_loadu_ps(wp.add(k * 32 + 16));
            for (t, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*xp.add(t * kp + k));
                acc[0] = _mm512_fmadd_ps(b, w0, acc[0]);
                acc[1] = _mm512_fmadd_ps(b, w1, acc[1]);
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(t * 32), acc[0]);
            _mm512_storeu_ps(out.as_mut_ptr().add(t * 32 + 16), acc[1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::MR;

    /// Half a tile at a time (4 tokens x 16 rows: 8 accumulators of the 16 registers).
    const H: usize = MR / 2;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn int_tile(a: &[u8], panel: &[i8], kp: usize, bounds: &[usize], out: &mut [i32]) {
        let groups = bounds.len() - 1;
        let wp = panel.as_ptr();
        for h in 0..2 {
            for g in 0..groups {
                let mut acc = [[_mm256_setzero_si256(); 2]; H];
                let mut k = bounds[g];
                while k < bounds[g + 1] {
                    // 16 rows x 2 codes as i16 pairs, in two vectors of 8 rows.
                    let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(k * 16) as *const _));
                    let w2 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(k * 16 + 16) as *const _));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let p = a.as_ptr().add((h * H + i) * kp + k);
                        let pair = *p as i32 | (*p.add(1) as i32) << 16;
                        let b = _mm256_set1_epi32(pair);
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(b, w));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(b, w2));
                    }
                    k += 2;
                }
                for (i, acc) in acc.iter().enumerate() {
                    let o = out.as_mut_ptr().add(((h * H + i) * groups + g) * 16);
                    _mm256_storeu_si256(o as *mut _, acc[0]);
                    _mm256_storeu_si256(o.add(8) as *mut _, acc[1]);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_tile(x: &[f32], panel: &[f32], kp: usize, out: &mut [f32]) {
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        for h in 0..2 {
            let mut acc = [[_mm256_setzero_ps(); 2]; H];
            for k in 0..kp {
                let w0 = _mm256_loadu_ps(wp.add(k * 16));
                let w1 = _mm256_loadu_ps(wp.add(k * 16 + 8));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_ps(*xp.add((h * H + i) * kp + k));
                    acc[0] = _mm256_fmadd_ps(b, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(b, w1, acc[1]);
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add((h * H + i) * 16), acc[0]);
                _mm256_storeu_ps(out.as_mut_ptr().add((h * H + i) * 16 + 8), acc[1]);
            }
        }
    }
}
