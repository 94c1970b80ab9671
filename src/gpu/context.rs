//! Adapter selection and device creation.
//!
//! `QWM_BACKEND` (vulkan, metal, dx12, gl) restricts the backends searched and `QWM_ADAPTER`
//! (a case-insensitive substring of the adapter name) picks an adapter by name; otherwise the
//! preference is discrete > integrated > virtual > cpu.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::pipeline::PipelineCache;
use super::pool::BufferPool;
use crate::{Error, Result};

/// Optional features qwm uses when the adapter has them. Every kernel has a path without them.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GpuFeatures {
    pub shader_f16: bool,
    pub subgroup: bool,
    pub timestamp_query: bool,
    pub timestamp_inside_encoders: bool,
}

impl GpuFeatures {
    fn from_wgpu(f: wgpu::Features) -> Self {
        GpuFeatures {
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroup: f.contains(wgpu::Features::SUBGROUP),
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_inside_encoders: f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
        }
    }

    fn to_wgpu(self) -> wgpu::Features {
        let mut f = wgpu::Features::empty();
        if self.shader_f16 {
            f |= wgpu::Features::SHADER_F16;
        }
        if self.subgroup {
            f |= wgpu::Features::SUBGROUP;
        }
        if self.timestamp_query {
            f |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if self.timestamp_inside_encoders {
            f |= wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        }
        f
    }
}

/// The kind of adapter, as a typed fact (the report's `device_type` is its printed name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    /// A software rasterizer running on the CPU (lavapipe, SwiftShader, WARP).
    Cpu,
    Other,
}

impl AdapterKind {
    pub fn of(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
            wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
            wgpu::DeviceType::Cpu => AdapterKind::Cpu,
            wgpu::DeviceType::Other => AdapterKind::Other,
        }
    }

    /// Whether the adapter runs on the CPU (kernels then favour fewer, larger workgroups and
    /// the CPU backend plans faster than it).
    pub fn is_software(self) -> bool {
        self == AdapterKind::Cpu
    }
}

/// A printable description of one adapter, as `qwm info` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// `device_type` as a typed fact, for decisions.
    #[serde(skip)]
    pub kind: AdapterKind,
    pub driver: String,
    pub driver_info: String,
    pub features: GpuFeatures,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Whether qwm would pick this adapter.
    pub selected: bool,
}

impl AdapterReport {
    fn new(adapter: &wgpu::Adapter, selected: bool) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterReport {
            name: info.name,
            backend: backend_name(info.backend).to_string(),
            device_type: device_type_name(info.device_type).to_string(),
            kind: AdapterKind::of(info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            features: GpuFeatures::from_wgpu(adapter.features()),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            selected,
        }
    }
}

pub fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

pub fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Which adapter to use: from the environment (`QWM_BACKEND`, `QWM_ADAPTER`) or given explicitly.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    pub backend: Option<String>,
    pub name_contains: Option<String>,
}

impl AdapterChoice {
    /// From `QWM_BACKEND` and `QWM_ADAPTER` (none if the overrides are invalid: opening a
    /// context then fails with the error, see `tuning::check_env`).
    pub fn from_env() -> Self {
        let t = super::tuning::current().ok();
        AdapterChoice {
            backend: t.and_then(|t| t.backend.clone()),
            name_contains: t.and_then(|t| t.adapter.clone()),
        }
    }

    fn backends(&self) -> Result<wgpu::Backends> {
        Ok(
            match self.backend.as_deref().map(|s| s.to_ascii_lowercase()) {
                None => wgpu::Backends::all(),
                Some(b) => match b.as_str() {
                    "vulkan" | "vk" => wgpu::Backends::VULKAN,
                    "metal" => wgpu::Backends::METAL,
                    "dx12" | "d3d12" => wgpu::Backends::DX12,
                    "gl" | "gles" | "opengl" => wgpu::Backends::GL,
                    other => {
                        return Err(Error::Invalid(format!(
                            "QWM_BACKEND={other:?} is an unknown backend; use one of vulkan, \
                             metal, dx12, gl, or unset it"
                        )))
                    }
                },
            },
        )
    }
}

fn no_adapter_help() -> String {
    "no GPU adapter was found. On Linux without a GPU, install Mesa's lavapipe (Vulkan on the CPU): \
     `apt-get install mesa-vulkan-drivers` (Debian 12: from bookworm-backports for Mesa >= 25, \
     3-8x faster). Commands that run models also work without any GPU with `--backend cpu`."
        .to_string()
}

fn instance_for(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter visible to qwm (all backends, ignoring `QWM_*` filters), with the one qwm would
/// pick marked `selected`.
pub fn list_adapters(choice: &AdapterChoice) -> Result<Vec<AdapterReport>> {
    let instance = instance_for(wgpu::Backends::all());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let picked = pick_adapter(&adapters, choice).ok();
    Ok(adapters
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterReport::new(a, Some(i) == picked))
        .collect())
}

/// The index in `adapters` of the one qwm plans on for `choice` (the rule `qwm info` shows).
pub fn pick_adapter(adapters: &[wgpu::Adapter], choice: &AdapterChoice) -> Result<usize> {
    let backends = choice.backends()?;
    let mut candidates: Vec<(usize, wgpu::AdapterInfo)> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| (i, a.get_info()))
        .filter(|(_, info)| backends.contains(wgpu::Backends::from(info.backend)))
        .collect();
    if let Some(needle) = &choice.name_contains {
        let n = needle.to_lowercase();
        let all: Vec<String> = candidates.iter().map(|(_, i)| i.name.clone()).collect();
        candidates.retain(|(_, info)| info.name.to_lowercase().contains(&n));
        if candidates.is_empty() {
            return Err(Error::NoAdapter(format!(
                "no adapter name contains QWM_ADAPTER={needle:?}; adapters found: {all:?}"
            )));
        }
    }
    // Stable order: device type preference, then Vulkan before others (best-tested path).
    candidates.sort_by_key(|(i, info)| {
        (
            type_rank(info.device_type),
            (info.backend != wgpu::Backend::Vulkan) as u32,
            *i,
        )
    });
    candidates
        .first()
        .map(|(i, _)| *i)
        .ok_or_else(|| match &choice.backend {
            Some(b) => Error::NoAdapter(format!(
                "no adapter for QWM_BACKEND={b:?}. {}",
                no_adapter_help()
            )),
            None => Error::NoAdapter(no_adapter_help()),
        })
}

/// Errors reported by wgpu asynchronously (validation, out-of-memory, device loss) are
/// collected here and turned into `Err` at the next submission or read, instead of panicking.
#[derive(Default)]
pub(crate) struct ErrorSink {
    pub errors: Mutex<Vec<String>>,
    pub lost: Mutex<Option<String>>,
}

/// An opened GPU: device, queue, limits, and the caches shared by every op.
pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    pub features: GpuFeatures,
    pub limits: wgpu::Limits,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: BufferPool,
    pub(crate) uniforms: super::recorder::UniformCache,
    pub(crate) sink: Arc<ErrorSink>,
}

impl GpuContext {
    /// Open the adapter chosen by `QWM_BACKEND` / `QWM_ADAPTER` or the default preference.
    pub fn new() -> Result<Self> {
        Self::with_choice(&AdapterChoice::from_env())
    }

    pub fn with_choice(choice: &AdapterChoice) -> Result<Self> {
        Self::with_options(choice, None)
    }

    /// Open an adapter with the optional features limited to `mask` (e.g. all off, to run the
    /// paths that need none of SHADER_F16, SUBGROUP and TIMESTAMP_QUERY).
    pub fn with_options(choice: &AdapterChoice, mask: Option<GpuFeatures>) -> Result<Self> {
        // Kernel launchers read the overrides later; refuse invalid ones before any work.
        super::tuning::check_env()?;
        let backends = choice.backends()?;
        let instance = instance_for(backends);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let idx = pick_adapter(&adapters, choice)?;
        let adapter = adapters
            .into_iter()
            .nth(idx)
            .ok_or_else(|| Error::NoAdapter(no_adapter_help()))?;
        Self::open(adapter, mask)
    }

    /// What qwm asks of `adapter`'s device: its optional features (limited to `mask`) and the
    /// adapter's own limits (the defaults cap storage bindings at 128 MiB and workgroup
    /// storage at 16 KiB even where the hardware offers more). The viewer's window asks the
    /// same when it shares its device with planning.
    pub fn device_descriptor(
        adapter: &wgpu::Adapter,
        mask: Option<GpuFeatures>,
    ) -> wgpu::DeviceDescriptor<'static> {
        let mut features = GpuFeatures::from_wgpu(adapter.features());
        if let Some(m) = mask {
            features.shader_f16 &= m.shader_f16;
            features.subgroup &= m.subgroup;
            features.timestamp_query &= m.timestamp_query;
            features.timestamp_inside_encoders &= m.timestamp_inside_encoders;
        }
        wgpu::DeviceDescriptor {
            label: Some("qwm"),
            required_features: features.to_wgpu(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }
    }

    fn open(adapter: wgpu::Adapter, mask: Option<GpuFeatures>) -> Result<Self> {
        let desc = Self::device_descriptor(&adapter, mask);
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("could not open the device: {e}")))?;
        Ok(Self::finish(adapter, device, queue, &desc))
    }

    /// A context on a device someone else opened (the viewer's window), if it has what
    /// [`GpuContext::device_descriptor`] asks of its adapter: the same optional features and
    /// limits, so planning computes the same numbers as on a device of its own. Otherwise an
    /// error naming what is missing (the caller then opens a device of its own).
    ///
    /// The context installs its error handlers on the device: errors of the other user's
    /// work then also surface at planning's next [`GpuContext::check`], instead of wgpu's
    /// default panic.
    pub fn from_existing(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Self> {
        super::tuning::check_env()?;
        let want = Self::device_descriptor(&adapter, None);
        let missing = missing_for_planning(
            want.required_features,
            &want.required_limits,
            device.features(),
            &device.limits(),
        );
        if !missing.is_empty() {
            return Err(Error::Gpu(format!(
                "the device of {} lacks what planning asks of that adapter: {}",
                adapter.get_info().name,
                missing.join(", ")
            )));
        }
        Ok(Self::finish(adapter, device, queue, &want))
    }

    /// The context around a device that has (at least) what `desc` asks; kernels use what it
    /// asks, so a shared device and an own one choose the same kernels.
    fn finish(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        desc: &wgpu::DeviceDescriptor<'static>,
    ) -> Self {
        let features = GpuFeatures::from_wgpu(desc.required_features);
        let limits = desc.required_limits.clone();
        let sink = Arc::new(ErrorSink::default());
        {
            let s = sink.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                s.errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(describe(&e));
            }));
            let s = sink.clone();
            device.set_device_lost_callback(move |reason, msg| {
                *s.lost
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(format!("{reason:?}: {msg}"));
            });
        }
        let mut report = AdapterReport::new(&adapter, true);
        report.features = features;
        GpuContext {
            pipelines: PipelineCache::default(),
            pool: BufferPool::default(),
            uniforms: Default::default(),
            adapter,
            device,
            queue,
            report,
            features,
            limits,
            sink,
        }
    }

    /// Fails if the device was lost or an earlier operation raised an error.
    pub fn check(&self) -> Result<()> {
        if let Some(lost) = self
            .sink
            .lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return Err(Error::Gpu(format!(
                "the GPU device was lost ({lost}); open a new context"
            )));
        }
        let mut errs = self
            .sink
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !errs.is_empty() {
            let msg = errs.join("; ");
            errs.clear();
            return Err(Error::Gpu(msg));
        }
        Ok(())
    }

    /// Destroy the device (for tests of the device-lost path).
    pub fn destroy_device(&self) {
        self.device.destroy();
    }

    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Lanes per workgroup for the register-tiled kernels. CPU drivers (lavapipe) run a
    /// workgroup as a loop over SIMD chunks and were fastest with one chunk (8 lanes: 2x over
    /// 64 at 1024^3, docs/BENCHMARKS.md); GPUs need larger groups to fill their cores.
    /// `QWM_WG` overrides it.
    pub fn lanes_per_workgroup(&self) -> usize {
        // Checked (a power of two, 1..=256) when the context was opened.
        if let Some(v) = super::tuning::current().ok().and_then(|t| t.wg) {
            return v;
        }
        if self.report.kind.is_software() {
            self.report.subgroup_max_size.clamp(4, 64) as usize
        } else {
            64
        }
    }

    /// Number of compiled pipelines (one per shader, entry point and constants).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Every pipeline compiled so far: (shader, entry point, constants sorted by name).
    pub fn compiled_pipelines(&self) -> Vec<super::pipeline::CompiledPipeline> {
        self.pipelines.compiled()
    }

    /// Block until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }
}

/// What a device lacks of the optional features and limits planning asks for (`want_*`, from
/// [`GpuContext::device_descriptor`]): one entry per missing feature or short limit, empty when
/// it has everything.
pub fn missing_for_planning(
    want_features: wgpu::Features,
    want_limits: &wgpu::Limits,
    features: wgpu::Features,
    limits: &wgpu::Limits,
) -> Vec<String> {
    let mut missing: Vec<String> = want_features
        .difference(features)
        .iter_names()
        .map(|(name, _)| format!("feature {name}"))
        .collect();
    want_limits.check_limits_with_fail_fn(limits, false, |name, want, got| {
        missing.push(format!("limit {name} {got} (planning asks {want})"));
    });
    missing
}

/// wgpu's `Display` for errors can omit the cause; walk the source chain for a full message.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}
