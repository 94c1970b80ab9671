//! The PTQ methods on the shipped Wall model, without planning episodes: for each method and
//! spec, the time to quantize from the shared calibration inputs (process CPU seconds and wall
//! seconds), the summed relative output error of the quantized linears on the calibration
//! inputs (in-sample), and the latent divergence from the float model on the first 10
//! evaluation episodes' starts (8 random action sequences each, as `qwm eval` reports it).
//! One JSON line per cell is appended to OUT as soon as it is measured; cells already in OUT
//! are skipped, so an interrupted run resumes.
//!
//! ```text
//! cargo run --release --example ptq_table -- CALIB OUT [method:spec ...]
//! ```
//! CALIB is a calibration inputs file of assets/wall.safetensors (`qwm quantize ... --calib`).

use std::io::Write;

use qwm::env;
use qwm::model::quantized::{layer_output_errors, layout, quantize_model_with};
use qwm::model::{format, CpuModel};
use qwm::plan::eval::eval_seed;
use qwm::plan::world::{latent_divergence, WorldPlanModel};
use qwm::plan::PlanModel;
use qwm::quant::{Awq, CalibData};

const CELLS: &str = "rtn:w4 gptq:w4 awq:w4 omniquant:w4 rtn:w3 gptq:w3 awq:w3 omniquant:w3 \
rtn:w4g32 gptq:w4g32 awq:w4g32 omniquant:w4g32 rtn:w8a8 smoothquant:w8a8 gptq:w8a8 awq:w8a8 \
omniquant:w8a8 rtn:w4a8 smoothquant:w4a8 gptq:w4a8 awq:w4a8 omniquant:w4a8";

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(calib), Some(out)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: ptq_table CALIB OUT [method:spec ...]");
    };
    let cells: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        CELLS.split_whitespace().map(String::from).collect()
    };
    let w = format::load("assets/wall.safetensors")?;
    let c = CalibData::load(calib)?;
    let done = std::fs::read_to_string(out).unwrap_or_default();
    let env = env::make("wall")?;
    let alpha = env.spec().alpha;
    let fm = CpuModel::new(&w)?;
    for cell in cells {
        let (method, spec) = cell.split_once(':').unwrap_or((&cell, "w4"));
        let method = method.replace('+', ":");
        let key = format!("\"cell\":\"{method}:{spec}\"");
        if done.contains(&key) {
            continue;
        }
        let (t0, c0) = (std::time::Instant::now(), cpu_seconds());
        let (q, qx) = quantize_model_with(&w, &spec.parse()?, &method, None, Some(&c))?;
        let (wall_s, cpu_s) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let qx = qx.expect("inputs given");
        let (mut rw, mut rc) = (w.clone(), c.clone());
        if method == "awq" {
            Awq::default().scale_model(&mut rw, &layout(&w, &spec.parse()?)?, &mut rc)?;
        }
        let err: f64 = layer_output_errors(&rw, &rc, &q, &qx)?
            .iter()
            .map(|(_, e)| e)
            .sum();
        let qm = CpuModel::new_quantized(&q)?;
        let mut fp = WorldPlanModel::new(&fm, w.norm.clone(), 5, alpha);
        let mut qp = WorldPlanModel::new(&qm, q.weights.norm.clone(), 5, alpha);
        let size = w.config.image_size;
        let mut div = 0.0;
        for i in 0..10 {
            let seed = eval_seed(i);
            let (s, g) = env.sample_start_goal(seed);
            let (obs, goal) = (env.render_state(&s, size)?, env.render_state(&g, size)?);
            let (p, gp) = (env.proprio_of(&s), env.proprio_of(&g));
            fp.set_problem(&obs, &p, &goal, &gp)?;
            qp.set_problem(&obs, &p, &goal, &gp)?;
            div += latent_divergence(&mut fp, &mut qp, 8, seed)? / 10.0;
        }
        let line = format!(
            "{{{key},\"quantize_cpu_s\":{cpu_s:.2},\"quantize_wall_s\":{wall_s:.2},\
             \"layer_error_sum\":{err:.5e},\"latent_divergence\":{div:.4e},\
             \"calib_episodes\":{},\"calib_tokens\":{}}}",
            c.episodes, c.tokens
        );
        println!("{line}");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
