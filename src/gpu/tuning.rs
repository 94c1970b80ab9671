//! The `QWM_*` environment overrides, parsed and checked in one place (docs/RELIABILITY.md).
//!
//! Adapter choice (`QWM_BACKEND`, `QWM_ADAPTER`) and kernel tuning (`QWM_MATMUL`, `QWM_QMATVEC`,
//! `QWM_QTOKENS`, `QWM_QCOLS`, `QWM_WG`) are read once per process. An invalid value is an
//! error that names the variable, the value and the accepted ones: before this module such
//! values were ignored without a word, and `QWM_WG=0` divided by zero in a launcher. An unknown
//! `QWM_` name (a typo) is reported as a warning, since other tools may set their own.

use std::sync::OnceLock;

use crate::{Error, Result};

/// Every variable qwm reads, with what it accepts (for errors and docs).
pub const VARIABLES: [(&str, &str); 7] = [
    ("QWM_BACKEND", "vulkan, metal, dx12 or gl"),
    ("QWM_ADAPTER", "any part of an adapter name"),
    ("QWM_MATMUL", "tiled or default"),
    ("QWM_QMATVEC", "split or lanes"),
    ("QWM_QTOKENS", "tiled or lanes"),
    ("QWM_QCOLS", "1, 2, 3 or 4"),
    ("QWM_WG", "a power of two from 1 to 256"),
];

/// The CPU backend's variables (read and checked by `cpu` and `app`, not here), so that they
/// are not reported as unknown.
pub const CPU_VARIABLES: [&str; 4] = [
    "QWM_CPU_ISA",
    "QWM_CPU_PORTABLE",
    "QWM_CPU_LINEAR",
    "QWM_CPU_WEIGHT_ONLY",
];

/// Checked overrides; `None` where the variable is unset (or empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuning {
    pub backend: Option<String>,
    pub adapter: Option<String>,
    pub matmul: Option<String>,
    pub qmatvec: Option<String>,
    pub qtokens: Option<String>,
    pub qcols: Option<u32>,
    pub wg: Option<usize>,
    /// `QWM_` names qwm does not know (probably typos).
    pub unknown: Vec<String>,
}

fn invalid(name: &str, value: &str) -> Error {
    let accepted = VARIABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, a)| a);
    Error::Invalid(format!(
        "{name}={value:?} is not a valid value (unknown or out of range); {name} accepts \
         {accepted}, or unset it"
    ))
}

impl Tuning {
    /// Parse the given variables (name, value); only `QWM_` names are looked at.
    pub fn parse<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Tuning> {
        let mut t = Tuning::default();
        let one_of = |name: &str, v: &str, ok: &[&str]| -> Result<String> {
            let l = v.trim().to_ascii_lowercase();
            if ok.contains(&l.as_str()) {
                Ok(l)
            } else {
                Err(invalid(name, v))
            }
        };
        for (name, value) in vars {
            if !name.starts_with("QWM_") || value.trim().is_empty() {
                continue;
            }
            match name {
                "QWM_BACKEND" => {
                    let b = one_of(
                        name,
                        value,
                        &[
                            "vulkan", "vk", "metal", "dx12", "d3d12", "gl", "gles", "opengl",
                        ],
                    )?;
                    t.backend = Some(b);
                }
                "QWM_ADAPTER" => t.adapter = Some(value.to_string()),
                "QWM_MATMUL" => t.matmul = Some(one_of(name, value, &["tiled", "default"])?),
                "QWM_QMATVEC" => t.qmatvec = Some(one_of(name, value, &["split", "lanes"])?),
                "QWM_QTOKENS" => t.qtokens = Some(one_of(name, value, &["tiled", "lanes"])?),
                "QWM_QCOLS" => match value.trim().parse::<u32>() {
                    Ok(c @ 1..=4) => t.qcols = Some(c),
                    _ => return Err(invalid(name, value)),
                },
                "QWM_WG" => match value.trim().parse::<usize>() {
                    Ok(w) if w.is_power_of_two() && w <= 256 => t.wg = Some(w),
                    _ => return Err(invalid(name, value)),
                },
                cpu if CPU_VARIABLES.contains(&cpu) => {}
                other => t.unknown.push(other.to_string()),
            }
        }
        Ok(t)
    }

    /// The value of a kernel-selection variable, as a string (`None` if unset).
    pub fn value(&self, name: &str) -> Option<&str> {
        match name {
            "QWM_BACKEND" => self.backend.as_deref(),
            "QWM_ADAPTER" => self.adapter.as_deref(),
            "QWM_MATMUL" => self.matmul.as_deref(),
            "QWM_QMATVEC" => self.qmatvec.as_deref(),
            "QWM_QTOKENS" => self.qtokens.as_deref(),
            _ => None,
        }
    }
}

/// This process's overrides, parsed once; the error (as text) if any is invalid.
pub fn current() -> Result<&'static Tuning> {
    static T: OnceLock<std::result::Result<Tuning, String>> = OnceLock::new();
    let t = T.get_or_init(|| {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .filter(|(k, _)| k.starts_with("QWM_"))
            .collect();
        let t = Tuning::parse(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
        for u in &t.unknown {
            log::warn!(
                "{u} is not a variable qwm reads (known: {})",
                VARIABLES.map(|(n, _)| n).join(", ")
            );
        }
        Ok(t)
    });
    t.as_ref()
        .map_err(|e| Error::Invalid(e.trim_start_matches("invalid input: ").to_string()))
}

/// Check the environment's `QWM_*` overrides (commands call this first).
pub fn check_env() -> Result<()> {
    current().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let t = Tuning::parse([("QWM_WG", "16"), ("QWM_QCOLS", "4"), ("HOME", "/")]).unwrap();
        assert_eq!((t.wg, t.qcols), (Some(16), Some(4)));
        for (k, v) in [
            ("QWM_WG", "0"),
            ("QWM_WG", "12"),
            ("QWM_WG", "-1"),
            ("QWM_QCOLS", "5"),
            ("QWM_MATMUL", "tiles"),
            ("QWM_BACKEND", "bogus"),
        ] {
            let e = Tuning::parse([(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
        let t = Tuning::parse([("QWM_MATMULL", "tiled")]).unwrap();
        assert_eq!(t.unknown, vec!["QWM_MATMULL".to_string()]);
    }
}
