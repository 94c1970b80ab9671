//! The `--quant` spec language shared by every command (documented in docs/QUANT.md).
//!
//! ```text
//! spec   := "fp" | module | "enc=" module "," "pred=" module  (either part may be omitted)
//! module := "fp" | "w" BITS [ "g" GROUP ] [ "a" ABITS [ "t" ] ]
//! BITS   := 2 | 3 | 4 | 6 | 8        GROUP := 32 | 64 | 128 (none: per output channel)
//! ABITS  := 4 | 6 | 8                "t": dynamic per-token, else static per-tensor
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const WEIGHT_BITS: [u8; 5] = [2, 3, 4, 6, 8];
pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];
pub const ACT_BITS: [u8; 3] = [4, 6, 8];

/// Weight quantization: bit-width and group size along the input dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSpec {
    pub bits: u8,
    /// `None`: one scale per output channel (row).
    pub group: Option<usize>,
}

/// Activation quantization on the inputs of the quantized linears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActSpec {
    pub bits: u8,
    /// Per-token dynamic ranges (`t`) instead of one static per-tensor range.
    pub dynamic: bool,
}

/// What one module (encoder or predictor) gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleQuant {
    pub weight: Option<WeightSpec>,
    pub act: Option<ActSpec>,
}

impl ModuleQuant {
    pub fn is_fp(&self) -> bool {
        self.weight.is_none() && self.act.is_none()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub encoder: ModuleQuant,
    pub predictor: ModuleQuant,
}

const GRAMMAR: &str =
    "valid specs: `fp`; `w<bits>[g<group>][a<abits>[t]]` with bits in {2,3,4,6,8}, \
group in {32,64,128} (omit for per-channel), abits in {4,6,8}, `t` for dynamic per-token \
activations (else static per-tensor), e.g. `w8`, `w4g128`, `w4g32a8`, `w8a8t`; per module: \
`enc=w8,pred=w4g32` (an omitted module stays fp)";

fn bad(spec: &str, why: impl fmt::Display) -> Error {
    Error::Invalid(format!("invalid quant spec {spec:?}: {why}; {GRAMMAR}"))
}

/// Leading decimal digits of `s` (their value and text) and the rest; `None` when there are
/// no digits. A number too large for `usize` has the value `usize::MAX`, so it is reported as
/// unsupported (with the digits as given), not as missing.
fn number(s: &str) -> (Option<(usize, &str)>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = (end > 0).then(|| (s[..end].parse().unwrap_or(usize::MAX), &s[..end]));
    (n, &s[end..])
}

impl FromStr for ModuleQuant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        if t == "fp" || t == "fp32" {
            return Ok(ModuleQuant::default());
        }
        let rest = t
            .strip_prefix('w')
            .ok_or_else(|| bad(s, "a module spec starts with `w<bits>` or is `fp`"))?;
        let (bits, mut rest) = number(rest);
        let (bits, text) = bits.ok_or_else(|| bad(s, "missing weight bit-width after `w`"))?;
        if bits > 8 || !WEIGHT_BITS.contains(&(bits as u8)) {
            return Err(bad(s, format!("weight bits {text} unsupported")));
        }
        let mut group = None;
        if let Some(r) = rest.strip_prefix('g') {
            let (g, r) = number(r);
            let (g, text) = g.ok_or_else(|| bad(s, "missing group size after `g`"))?;
            if !GROUP_SIZES.contains(&g) {
                return Err(bad(s, format!("group size {text} unsupported")));
            }
            group = Some(g);
            rest = r;
        }
        let mut act = None;
        if let Some(r) = rest.strip_prefix('a') {
            let (a, r) = number(r);
            let (a, text) = a.ok_or_else(|| bad(s, "missing activation bit-width after `a`"))?;
            if a > 8 || !ACT_BITS.contains(&(a as u8)) {
                return Err(bad(s, format!("activation bits {text} unsupported")));
            }
            let (dynamic, r) = match r.strip_prefix('t') {
                Some(r) => (true, r),
                None => (false, r),
            };
            act = Some(ActSpec {
                bits: a as u8,
                dynamic,
            });
            rest = r;
        }
        if !rest.is_empty() {
            return Err(bad(s, format!("unexpected trailing {rest:?}")));
        }
        Ok(ModuleQuant {
            weight: Some(WeightSpec {
                bits: bits as u8,
                group,
            }),
            act,
        })
    }
}

impl FromStr for QuantSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            return Err(bad(s, "empty"));
        }
        if !t.contains('=') {
            let m: ModuleQuant = t.parse()?;
            return Ok(QuantSpec {
                encoder: m,
                predictor: m,
            });
        }
        let mut spec = QuantSpec::default();
        let mut seen = (false, false);
        for part in t.split(',') {
            let (key, val) = part
                .split_once('=')
                .ok_or_else(|| bad(s, format!("{part:?} is not `enc=...` or `pred=...`")))?;
            let m: ModuleQuant = val.parse().map_err(|e| match e {
                Error::Invalid(msg) => Error::Invalid(format!("in {s:?}: {msg}")),
                other => other,
            })?;
            match key.trim().to_ascii_lowercase().as_str() {
                "enc" | "encoder" if !seen.0 => {
                    spec.encoder = m;
                    seen.0 = true;
                }
                "pred" | "predictor" if !seen.1 => {
                    spec.predictor = m;
                    seen.1 = true;
                }
                k @ ("enc" | "encoder" | "pred" | "predictor") => {
                    return Err(bad(s, format!("module {k:?} given twice")))
                }
                k => return Err(bad(s, format!("unknown module {k:?} (use enc or pred)"))),
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for ModuleQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.weight {
            None => write!(f, "fp"),
            Some(w) => {
                write!(f, "w{}", w.bits)?;
                if let Some(g) = w.group {
                    write!(f, "g{g}")?;
                }
                if let Some(a) = self.act {
                    write!(f, "a{}{}", a.bits, if a.dynamic { "t" } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.encoder == self.predictor {
            write!(f, "{}", self.encoder)
        } else {
            write!(f, "enc={},pred={}", self.encoder, self.predictor)
        }
    }
}
