//! The QuantWM paper's six findings, judged from a study's cells with fixed rules
//! (docs/STUDY.md, "Verdicts"): Wilson 95% intervals per cell, Newcombe's interval for a
//! difference of two success rates, and a Fisher-z interval for Spearman's rho.
//!
//! A difference counts only when its 95% interval excludes 0. A claim of "no difference"
//! needs complete cells (every episode), since a short cell's wide interval says little.

use super::report::Entry;
use crate::plan::stats::wilson95;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Reproduced,
    NotReproduced,
    Inconclusive,
}

impl Verdict {
    pub fn text(&self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

pub struct Finding {
    pub number: usize,
    pub claim: &'static str,
    pub verdict: Verdict,
    /// Markdown bullet lines: the deciding cells and intervals, per environment.
    pub evidence: Vec<String>,
}

pub const CLAIMS: [&str; 6] = [
    "8 and 6 bits match float",
    "groups stabilize low-bit weights",
    "collapse at 3 and 2 bits",
    "encoder and predictor sensitivity differ",
    "activation granularity helps inconsistently",
    "at low bits the objective stops tracking success, and more CEM steps do not recover it",
];

/// Newcombe's hybrid-score interval for `p1 - p2` (method 10), from the Wilson intervals.
pub fn diff_ci(k1: usize, n1: usize, k2: usize, n2: usize) -> [f64; 3] {
    let (p1, p2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
    let ([l1, u1], [l2, u2]) = (wilson95(k1, n1), wilson95(k2, n2));
    let d = p1 - p2;
    [
        d,
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    ]
}

/// Where one cell stands against a reference cell (float, or RTN at the same spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The difference's interval lies above 0.
    Above,
    /// The difference's interval lies below 0.
    Below,
    /// Both cells complete and the interval includes 0: no difference detected.
    Level,
    /// The interval includes 0 but a cell is unfinished: not decided yet.
    Undecided,
}

impl Standing {
    pub fn text(&self) -> &'static str {
        match self {
            Standing::Above => "above",
            Standing::Below => "below",
            Standing::Level => "level",
            Standing::Undecided => "undecided",
        }
    }
}

/// Compare `(successes, episodes, complete)` of a cell against a reference by the study's
/// rules (a difference counts when Newcombe's interval excludes 0; "level" needs complete
/// cells); `None` when either has no episode.
pub fn standing(a: (usize, usize, bool), b: (usize, usize, bool)) -> Option<(Standing, [f64; 3])> {
    if a.1 == 0 || b.1 == 0 {
        return None;
    }
    let d = diff_ci(a.0, a.1, b.0, b.1);
    let s = if d[1] > 0.0 {
        Standing::Above
    } else if d[2] < 0.0 {
        Standing::Below
    } else if a.2 && b.2 {
        Standing::Level
    } else {
        Standing::Undecided
    };
    Some((s, d))
}

/// Spearman's rho with a 95% interval from Fisher's z (standard error 1.06 / sqrt(n - 3),
/// Fieller et al.); `None` below 4 pairs.
pub fn rho_ci(rho: f64, n: usize) -> Option<[f64; 2]> {
    if n < 4 || !rho.is_finite() {
        return None;
    }
    let z = rho.clamp(-0.999_999, 0.999_999).atanh();
    let se = 1.06 / ((n - 3) as f64).sqrt();
    Some([(z - 1.96 * se).tanh(), (z + 1.96 * se).tanh()])
}

const NO_EPISODE: &str = "no episode yet";
const ABSENT: &str = "not in the study";

/// What a cited cell has: episodes, none yet, or no place in the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Has {
    Episodes,
    Nothing,
    Absent,
}

/// A cell as cited in evidence: `` `cell` k/n = p [lo-hi] ``, `` `cell`: no episode yet `` or
/// `` `label`: not in the study ``, together with the name and what the cell has, so that
/// `judge` can fold lines about cells without episodes into name lists.
pub struct Cite {
    text: String,
    name: String,
    has: Has,
}

impl std::fmt::Display for Cite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

pub fn cite(e: Option<&Entry>, label: &str) -> Cite {
    let Some(e) = e else {
        return Cite {
            text: format!("`{label}`: {ABSENT}"),
            name: label.to_string(),
            has: Has::Absent,
        };
    };
    let name = e.cell.name.clone();
    if e.n() == 0 {
        let text = format!("`{name}`: {NO_EPISODE}");
        return Cite {
            text,
            name,
            has: Has::Nothing,
        };
    }
    let [lo, hi] = wilson95(e.k(), e.n());
    let text = format!(
        "`{name}` {}/{}{} = {:.2} [{lo:.2}-{hi:.2}]",
        e.k(),
        e.n(),
        if e.complete() { "" } else { " (stopped)" },
        e.k() as f64 / e.n() as f64
    );
    Cite {
        text,
        name,
        has: Has::Episodes,
    }
}

/// One evidence line and the cells it cites.
pub struct Line {
    text: String,
    cites: Vec<(String, Has)>,
}

impl Line {
    fn plain(text: impl Into<String>) -> Self {
        Line {
            text: text.into(),
            cites: Vec::new(),
        }
    }
    fn citing(text: String, cites: &[&Cite]) -> Self {
        Line {
            text,
            cites: cites.iter().map(|c| (c.name.clone(), c.has)).collect(),
        }
    }
    /// A line that cites cells, none of them with episodes, says nothing but their names.
    fn only_names(&self) -> bool {
        !self.cites.is_empty() && self.cites.iter().all(|c| c.1 != Has::Episodes)
    }
}

/// The difference of two cells: `Some((d, lo, hi))` when both have episodes.
fn diff(a: Option<&Entry>, b: Option<&Entry>) -> Option<[f64; 3]> {
    let (a, b) = (a?, b?);
    (a.n() > 0 && b.n() > 0).then(|| diff_ci(a.k(), a.n(), b.k(), b.n()))
}

fn show_diff(d: Option<[f64; 3]>) -> String {
    d.map_or("difference: -".into(), |[d, lo, hi]| {
        format!("difference {d:+.2} [{lo:+.2} to {hi:+.2}]")
    })
}

fn both_complete(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    a.is_some_and(|e| e.complete()) && b.is_some_and(|e| e.complete())
}

/// Cells of one environment, looked up by spec, method and CEM steps (default planner).
pub struct EnvCells<'a> {
    pub env: String,
    pub entries: Vec<&'a Entry>,
    pub default_steps: usize,
}

impl<'a> EnvCells<'a> {
    pub fn get(&self, quant: &str, method: &str, steps: usize) -> Option<&'a Entry> {
        self.entries.iter().copied().find(|e| {
            e.cell.quant == quant
                && (e.cell.method == method || quant == "fp")
                && e.cell.opt_steps == steps
                && e.default_mpc
        })
    }
    pub fn at(&self, quant: &str) -> Option<&'a Entry> {
        self.get(quant, "rtn", self.default_steps)
    }
}

/// Combine per-environment verdicts: agreeing decisive ones decide, disagreement or none
/// leaves the finding inconclusive.
fn combine(per_env: &[Verdict]) -> Verdict {
    let decisive: Vec<Verdict> = per_env
        .iter()
        .copied()
        .filter(|v| *v != Verdict::Inconclusive)
        .collect();
    match decisive.first() {
        Some(v) if decisive.iter().all(|d| d == v) => *v,
        _ => Verdict::Inconclusive,
    }
}

type Rule = fn(&EnvCells, &mut Vec<Line>) -> Verdict;

pub fn judge(envs: &[EnvCells]) -> Vec<Finding> {
    let rules: [Rule; 6] = [f1, f2, f3, f4, f5, f6];
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let mut evidence = Vec::new();
            let mut vs = Vec::new();
            for e in envs {
                let mut lines = Vec::new();
                let v = rule(e, &mut lines);
                evidence.push(format!("**{}: {}.**", e.env, v.text()));
                let mut waiting: Vec<&str> = Vec::new();
                let mut absent: Vec<&str> = Vec::new();
                for l in &lines {
                    if !l.only_names() {
                        evidence.push(format!("  {}", l.text));
                        continue;
                    }
                    for (name, has) in &l.cites {
                        let list = if *has == Has::Absent {
                            &mut absent
                        } else {
                            &mut waiting
                        };
                        if !list.contains(&name.as_str()) {
                            list.push(name);
                        }
                    }
                }
                for (what, names) in [("not run yet", &waiting), (ABSENT, &absent)] {
                    if !names.is_empty() {
                        let names: Vec<String> = names.iter().map(|w| format!("`{w}`")).collect();
                        evidence.push(format!("  {what}: {}", names.join(", ")));
                    }
                }
                vs.push(v);
            }
            Finding {
                number: i + 1,
                claim: CLAIMS[i],
                verdict: combine(&vs),
                evidence,
            }
        })
        .collect()
}

/// (1) W8 and W6 (every granularity, RTN) against float: no drop whose interval excludes 0.
fn f1(c: &EnvCells, out: &mut Vec<Line>) -> Verdict {
    let fp = c.at("fp");
    let mut worse = false;
    let mut all_complete = fp.is_some_and(|e| e.complete());
    let mut any = false;
    for q in [
        "w8", "w8g64", "w8g32", "w8g128", "w6", "w6g64", "w6g32", "w6g128",
    ] {
        let Some(e) = c.at(q) else { continue };
        any = true;
        let d = diff(Some(e), fp);
        let ce = cite(Some(e), q);
        out.push(Line::citing(
            format!("{ce} vs float: {}", show_diff(d)),
            &[&ce],
        ));
        worse |= d.is_some_and(|d| d[2] < 0.0);
        all_complete &= e.complete();
    }
    let cf = cite(fp, "fp");
    out.insert(0, Line::citing(format!("float {cf}"), &[&cf]));
    if worse {
        Verdict::NotReproduced
    } else if any && all_complete {
        Verdict::Reproduced
    } else {
        Verdict::Inconclusive
    }
}

/// (2) At 4, 3 and 2 bits a grouped cell beats per-channel (interval above 0).
fn f2(c: &EnvCells, out: &mut Vec<Line>) -> Verdict {
    let (mut better, mut worse, mut favour, mut pairs, mut complete) = (0, 0, 0, 0, true);
    for b in [4, 3, 2] {
        let pc = c.at(&format!("w{b}"));
        for g in [32, 64, 128] {
            let Some(e) = c.at(&format!("w{b}g{g}")) else {
                continue;
            };
            let d = diff(Some(e), pc);
            let (ce, cp) = (cite(Some(e), ""), cite(pc, &format!("w{b}")));
            out.push(Line::citing(
                format!("{ce} vs {cp}: {}", show_diff(d)),
                &[&ce, &cp],
            ));
            if let Some(d) = d {
                pairs += 1;
                better += (d[1] > 0.0) as usize;
                worse += (d[2] < 0.0) as usize;
                favour += (d[0] > 0.0) as usize;
            }
            complete &= both_complete(Some(e), pc);
        }
    }
    if better > 0 && worse == 0 {
        Verdict::Reproduced
    } else if worse > 0 || (pairs > 0 && complete && favour == 0) {
        Verdict::NotReproduced
    } else {
        Verdict::Inconclusive
    }
}

/// (3) Per-channel W3 and W2 collapse: the upper end of the interval is below half of
/// float's rate; a lower end above half of it means no collapse.
fn f3(c: &EnvCells, out: &mut Vec<Line>) -> Verdict {
    let fp = c.at("fp");
    let Some(f) = fp.filter(|e| e.n() > 0) else {
        out.push(Line::plain("float cell has no episode: no reference"));
        return Verdict::Inconclusive;
    };
    let half = f.k() as f64 / f.n() as f64 / 2.0;
    let cf = cite(fp, "fp");
    out.push(Line::citing(
        format!("float {cf}; collapse means an interval entirely below {half:.2}"),
        &[&cf],
    ));
    let (mut collapsed, mut standing, mut judged) = (0, 0, 0);
    for b in [3, 2] {
        let q = format!("w{b}");
        let e = c.at(&q);
        let ce = cite(e, &q);
        let mut line = ce.to_string();
        if let Some(e) = e.filter(|e| e.n() > 0) {
            let [lo, hi] = wilson95(e.k(), e.n());
            judged += 1;
            if hi < half {
                collapsed += 1;
                line += ": collapsed";
            } else if lo > half {
                standing += 1;
                line += ": no collapse";
            } else {
                line += ": undecided";
            }
        }
        out.push(Line::citing(line, &[&ce]));
    }
    if standing > 0 && judged < 2 {
        out.push(Line::plain(
            "one bit-width standing above half of float refutes the claim as stated; \
             the other bit-width has not run",
        ));
    }
    if standing > 0 {
        Verdict::NotReproduced
    } else if collapsed == 2 && judged == 2 {
        Verdict::Reproduced
    } else {
        Verdict::Inconclusive
    }
}

/// (4) Encoder-only vs predictor-only at W4 and W3: a difference whose interval excludes 0.
fn f4(c: &EnvCells, out: &mut Vec<Line>) -> Verdict {
    let (mut differ, mut complete, mut pairs) = (false, true, 0);
    for b in [4, 3] {
        let enc = c.at(&format!("enc=w{b},pred=fp"));
        let pred = c.at(&format!("enc=fp,pred=w{b}"));
        let d = diff(enc, pred);
        let ce = cite(enc, &format!("enc=w{b},pred=fp"));
        let cp = cite(pred, &format!("enc=fp,pred=w{b}"));
        let mut line = format!(
            "W{b}: encoder-only {ce} vs predictor-only {cp}: {}",
            show_diff(d)
        );
        if let Some(d) = d {
            pairs += 1;
            if d[1] > 0.0 || d[2] < 0.0 {
                differ = true;
                line += if d[0] < 0.0 {
                    " (the encoder is the more sensitive module)"
                } else {
                    " (the predictor is the more sensitive module)"
                };
            }
        }
        complete &= both_complete(enc, pred);
        out.push(Line::citing(line, &[&ce, &cp]));
    }
    if differ {
        Verdict::Reproduced
    } else if pairs > 0 && complete {
        Verdict::NotReproduced
    } else {
        Verdict::Inconclusive
    }
}

/// (5) Dynamic per-token vs static per-tensor activations: inconsistent means a significant
/// gain somewhere and none (or a loss) elsewhere.
fn f5(c: &EnvCells, out: &mut Vec<Line>) -> Verdict {
    let (mut gain, mut loss, mut flat, mut complete, mut pairs) = (0, 0, 0, true, 0);
    for (w, a) in [(8, 8), (6, 6), (4, 8), (4, 4)] {
        let st = c.at(&format!("w{w}a{a}"));
        let dy = c.at(&format!("w{w}a{a}t"));
        let d = diff(dy, st);
        let (cd, cs) = (
            cite(dy, &format!("w{w}a{a}t")),
            cite(st, &format!("w{w}a{a}")),
        );
        out.push(Line::citing(
            format!(
                "W{w}A{a}: per-token dynamic {cd} vs per-tensor static {cs}: {}",
                show_diff(d)
            ),
            &[&cd, &cs],
        ));
        if let Some(d) = d {
            pairs += 1;
            if d[1] > 0.0 {
                gain += 1;
            } else if d[2] < 0.0 {
                loss += 1;
            } else {
                flat += 1;
            }
        }
        complete &= both_complete(dy, st);
    }
    if gain > 0 && (loss > 0 || (flat > 0 && complete)) {
        Verdict::Reproduced
    } else if pairs == 4 && complete && (gain == 4 || gain + loss == 0) {
        Verdict::NotReproduced
    } else {
        Verdict::Inconclusive
    }
}

/// (6) (a) float's rho(objective, final distance) is positive and the low-bit rho is lower
/// (Fisher-z intervals); (b) 30 or 50 CEM steps do not raise W4/W3 success over 10.
fn f6(c: &EnvCells, out: &mut Vec<Line>) -> Verdict {
    let rho = |e: Option<&Entry>| -> Option<(f64, usize)> {
        let e = e?;
        Some((e.report.as_ref()?.spearman_objective_vs_distance?, e.n()))
    };
    let show = |name: &str, r: Option<(f64, usize)>| match r {
        None => format!("{name}: rho -"),
        Some((r, n)) => match rho_ci(r, n) {
            Some([lo, hi]) => format!("{name}: rho {r:+.2} [{lo:+.2} to {hi:+.2}] (n {n})"),
            None => format!("{name}: rho {r:+.2} (n {n})"),
        },
    };
    let f = rho(c.at("fp"));
    out.push(Line::plain(format!(
        "(a) objective vs final distance: {}",
        show("fp", f)
    )));
    let mut a = Verdict::Inconclusive;
    let f_ci = f.and_then(|(r, n)| rho_ci(r, n));
    let tracks_at_fp = f_ci.is_some_and(|ci| ci[0] > 0.0);
    if f_ci.is_some() && !tracks_at_fp {
        out.push(Line::plain(
            "  float's rho is not above 0 (its interval includes 0): there is no tracking at \
             float to lose, so (a) cannot be decided on these episodes",
        ));
    }
    let mut still_tracks = tracks_at_fp;
    let mut low_cells = 0;
    for q in ["w4", "w3", "w2"] {
        let r = rho(c.at(q));
        out.push(Line::plain(format!("  {}", show(q, r))));
        let lc = r.and_then(|(r, n)| rho_ci(r, n));
        if let (Some(fc), Some(lc)) = (f_ci, lc) {
            if fc[0] > 0.0 && lc[1] < fc[0] {
                a = Verdict::Reproduced;
            }
        }
        if c.at(q).is_some_and(|e| e.complete()) {
            low_cells += 1;
            still_tracks &= lc.is_some_and(|ci| ci[0] > 0.0);
        }
    }
    if a != Verdict::Reproduced && still_tracks && low_cells > 0 {
        a = Verdict::NotReproduced;
    }
    let (mut recovered, mut complete, mut pairs) = (false, true, 0);
    // Only step counts above the default are "more" (PushT's default is already 30).
    let more_steps: Vec<usize> = [30, 50]
        .into_iter()
        .filter(|s| *s > c.default_steps)
        .collect();
    for q in ["w4", "w3"] {
        let base = c.at(q);
        for &s in &more_steps {
            let more = c.get(q, "rtn", s);
            let d = diff(more, base);
            let cm = cite(more, &format!("{q}.os{s}"));
            out.push(Line::citing(
                format!(
                    "(b) {cm} vs {} CEM steps: {}",
                    c.default_steps,
                    show_diff(d)
                ),
                &[&cm],
            ));
            if let Some(d) = d {
                pairs += 1;
                recovered |= d[1] > 0.0;
            }
            complete &= both_complete(more, base);
        }
    }
    let b = if recovered {
        Verdict::NotReproduced
    } else if pairs == 2 * more_steps.len() && pairs > 0 && complete {
        Verdict::Reproduced
    } else {
        Verdict::Inconclusive
    };
    out.push(Line::plain(format!("(a) {}, (b) {}", a.text(), b.text())));
    match (a, b) {
        (Verdict::Reproduced, Verdict::Reproduced) => Verdict::Reproduced,
        (Verdict::NotReproduced, _) | (_, Verdict::NotReproduced) => Verdict::NotReproduced,
        _ => Verdict::Inconclusive,
    }
}
