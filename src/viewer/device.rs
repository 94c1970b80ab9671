//! Which wgpu device live planning runs on: the window's own, when the adapter planning would
//! choose can present to the window, or one of its own otherwise.
//!
//! eframe cannot fall back once a device handed to it (`WgpuSetup::Existing`) fails to present,
//! so the window creates the device (`WgpuSetup::CreateNew`) and qwm chooses its adapter: the
//! one planning picks (the rule of `qwm info`, `QWM_BACKEND` and `QWM_ADAPTER` included) when
//! it supports the window's surface, asking for the features and limits planning needs; any
//! adapter that can present otherwise. The planning thread then gets a context on the
//! window's device ([`GpuContext::from_existing`]), or opens its own as it would without a
//! window. Either way frames reach the UI as images: planning reads its frames back for the
//! trace anyway, and it never runs on the UI thread.

use std::sync::{Arc, Mutex};

use crate::gpu::{pick_adapter, AdapterChoice, AdapterKind, GpuContext};

/// The backend the live planner was asked for (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanBackend {
    /// A hardware adapter if there is one, else the CPU backend.
    Auto,
    /// Any adapter, software rasterizers included.
    Gpu,
    Cpu,
}

/// The planning adapter as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterFacts {
    pub name: String,
    pub kind: AdapterKind,
    /// Whether it supports the window's surface.
    pub can_present: bool,
}

/// What the window's adapter choice decided for planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Share the window's device: the window opens the planning adapter with planning's
    /// features and limits.
    Share,
    /// Planning opens a device of its own; why.
    Own(String),
    /// Planning runs on the CPU backend; why.
    Cpu(String),
}

/// The decision for `want`, given the adapter planning would pick (or why there is none).
pub fn decide(want: PlanBackend, planning: Result<&AdapterFacts, String>) -> Decision {
    if want == PlanBackend::Cpu {
        return Decision::Cpu("--backend cpu".into());
    }
    let a = match planning {
        Ok(a) => a,
        Err(e) => return Decision::Cpu(format!("no GPU adapter for planning: {e}")),
    };
    if want == PlanBackend::Auto && a.kind.is_software() {
        return Decision::Cpu(format!(
            "auto: {} is a software rasterizer; --backend gpu plans on it",
            a.name
        ));
    }
    if !a.can_present {
        return Decision::Own(format!("{} cannot present to this window", a.name));
    }
    Decision::Share
}

/// The device live planning ended up with, as the Info panel and the log say it.
#[derive(Clone)]
pub enum PlanDevice {
    /// The window's device (and adapter).
    Shared(Arc<GpuContext>),
    Own(String),
    Cpu(String),
}

impl PlanDevice {
    /// The shared context, if planning uses the window's device.
    pub fn shared(&self) -> Option<Arc<GpuContext>> {
        match self {
            PlanDevice::Shared(c) => Some(c.clone()),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PlanDevice::Shared(c) => format!(
                "device shared with the window ({}, {})",
                c.report.name, c.report.backend
            ),
            PlanDevice::Own(why) => format!("own device: {why}"),
            PlanDevice::Cpu(why) => format!("CPU backend, no device to share ({why})"),
        }
    }

    /// The device planning uses, given the decision and the window's device once it exists
    /// (`None`: the window has no wgpu render state).
    pub fn resolve(d: Decision, window: Option<&eframe::egui_wgpu::RenderState>) -> PlanDevice {
        match (d, window) {
            (Decision::Cpu(why), _) => PlanDevice::Cpu(why),
            (Decision::Own(why), _) => PlanDevice::Own(why),
            (Decision::Share, None) => {
                PlanDevice::Own("the window has no wgpu device to share".into())
            }
            (Decision::Share, Some(rs)) => match GpuContext::from_existing(
                rs.adapter.clone(),
                rs.device.clone(),
                rs.queue.clone(),
            ) {
                Ok(c) => PlanDevice::Shared(Arc::new(c)),
                Err(e) => PlanDevice::Own(e.to_string()),
            },
        }
    }
}

/// Where the adapter selector leaves its decision for the app creator.
pub type DecisionSlot = Arc<Mutex<Option<Decision>>>;

/// The window's wgpu setup for a live planner asking for `want`: eframe's own unless planning
/// may use a GPU, else qwm's adapter choice (its decision goes to `slot`).
pub fn wgpu_setup(want: PlanBackend, slot: DecisionSlot) -> Option<eframe::egui_wgpu::WgpuSetup> {
    if want == PlanBackend::Cpu {
        return None;
    }
    let mut create = eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    let eframe_device = create.device_descriptor.clone();
    let chosen: Arc<Mutex<Option<wgpu::AdapterInfo>>> = Arc::default();
    let chosen2 = chosen.clone();
    create.native_adapter_selector = Some(Arc::new(move |adapters, surface| {
        let (adapter, decision) = select(want, adapters, surface)?;
        let info = adapter.get_info();
        let share = decision == Decision::Share;
        *lock(&chosen2) = share.then_some(info);
        *lock(&slot) = Some(decision);
        Ok(adapter)
    }));
    create.device_descriptor = Arc::new(move |adapter| {
        // Planning's features and limits on the adapter chosen to share; eframe's defaults
        // on any other (it then only draws).
        if lock(&chosen).as_ref() == Some(&adapter.get_info()) {
            GpuContext::device_descriptor(adapter, None)
        } else {
            eframe_device(adapter)
        }
    });
    Some(eframe::egui_wgpu::WgpuSetup::CreateNew(create))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The window's adapter and what it means for planning.
fn select(
    want: PlanBackend,
    adapters: &[wgpu::Adapter],
    surface: Option<&wgpu::Surface<'_>>,
) -> Result<(wgpu::Adapter, Decision), String> {
    let presents = |a: &wgpu::Adapter| surface.is_none_or(|s| a.is_surface_supported(s));
    let picked = pick_adapter(adapters, &AdapterChoice::from_env()).map_err(|e| e.to_string());
    let facts = picked.as_ref().map(|&i| {
        let info = adapters[i].get_info();
        AdapterFacts {
            name: info.name,
            kind: AdapterKind::of(info.device_type),
            can_present: presents(&adapters[i]),
        }
    });
    let decision = decide(want, facts.as_ref().map_err(|e| e.to_string()));
    if let (Decision::Share, Ok(i)) = (&decision, picked) {
        return Ok((adapters[i].clone(), decision));
    }
    // Not shared: the first adapter that can present, by qwm's preference (hardware first,
    // Vulkan first), which is what eframe's high-performance request would choose.
    let i = pick_adapter_presenting(adapters, &presents)
        .ok_or_else(|| "no wgpu adapter can present to this window".to_string())?;
    Ok((adapters[i].clone(), decision))
}

fn pick_adapter_presenting(
    adapters: &[wgpu::Adapter],
    presents: &dyn Fn(&wgpu::Adapter) -> bool,
) -> Option<usize> {
    let able: Vec<wgpu::Adapter> = adapters.iter().filter(|a| presents(a)).cloned().collect();
    let j = pick_adapter(&able, &AdapterChoice::default()).ok()?;
    let info = able[j].get_info();
    adapters.iter().position(|a| a.get_info() == info)
}
