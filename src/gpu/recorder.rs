//! Records dispatches into one command buffer and submits them together.
//!
//! Without profiling, every dispatch goes into a single compute pass. With profiling (and an
//! adapter with TIMESTAMP_QUERY), each dispatch gets its own pass with begin/end timestamps so
//! per-kernel GPU time can be read back after the submission.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use super::GpuContext;
use crate::{Error, Result};

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.ctx.pool.close_recording();
    }
}

/// GPU time of one recorded dispatch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    pub label: String,
    pub seconds: f64,
}

const MAX_QUERIES: u32 = 4096;

struct Profiler {
    query_set: wgpu::QuerySet,
    labels: Vec<&'static str>,
}

/// Uniform buffers cached by content: a forward pass issues the same parameter structs every
/// call, so after the first call no uniform buffer is created.
#[derive(Default)]
pub(crate) struct UniformCache {
    map: Mutex<HashMap<Vec<u8>, wgpu::Buffer>>,
}

impl UniformCache {
    fn get(&self, device: &wgpu::Device, bytes: &[u8]) -> wgpu::Buffer {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = map.get(bytes) {
            return b.clone();
        }
        if map.len() > 8192 {
            map.clear();
        }
        let b = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qwm params"),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        map.insert(bytes.to_vec(), b.clone());
        b
    }
}

pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    profiler: Option<Profiler>,
    dispatches: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        ctx.pool.open_recording();
        Recorder {
            ctx,
            encoder: Some(
                ctx.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qwm") }),
            ),
            pass: None,
            profiler: None,
            dispatches: 0,
        }
    }

    /// A recorder that times each dispatch with GPU timestamps. Falls back to an unprofiled
    /// recorder (and `submit_profiled` returns an empty list) without TIMESTAMP_QUERY.
    pub fn profiled(ctx: &'a GpuContext) -> Self {
        let mut r = Self::new(ctx);
        if ctx.features.timestamp_query {
            r.profiler = Some(Profiler {
                query_set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("qwm timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: MAX_QUERIES,
                }),
                labels: Vec::new(),
            });
        }
        r
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Record one dispatch. `params` (if any) is bound at binding 0; `buffers` at 1, 2, ...
    pub(crate) fn dispatch(
        &mut self,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        params: Option<&[u8]>,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let numbered: Vec<(u32, &wgpu::Buffer)> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32 + 1, *b))
            .collect();
        self.dispatch_at(label, pipeline, params, &numbered, workgroups)
    }

    /// Record one dispatch with explicit binding numbers (entry points whose auto layout
    /// uses only some of a shader's bindings).
    pub(crate) fn dispatch_at(
        &mut self,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        params: Option<&[u8]>,
        buffers: &[(u32, &wgpu::Buffer)],
        workgroups: [u32; 3],
    ) -> Result<()> {
        self.ctx.check()?;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::Limit(format!(
                "{label}: {workgroups:?} workgroups exceed this adapter's \
                 max_compute_workgroups_per_dimension {max}; split the batch"
            )));
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        let uniform = params.map(|p| self.ctx.uniforms.get(&self.ctx.device, p));
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        if let Some(u) = &uniform {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            });
        }
        for &(binding, b) in buffers {
            let size = b.size();
            let limit = self.ctx.max_binding_bytes();
            if size > limit {
                return Err(Error::Limit(format!(
                    "{label}: binding {binding} is {size} bytes, over this adapter's \
                     max_storage_buffer_binding_size of {limit} bytes"
                )));
            }
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
        let encoder = self
            .encoder
            .as_mut()
            .ok_or_else(|| Error::Gpu("recorder already submitted".into()))?;
        match &mut self.profiler {
            Some(prof) => {
                if prof.labels.len() as u32 * 2 + 2 > MAX_QUERIES {
                    return Err(Error::Limit(format!(
                        "a profiled recording holds at most {} dispatches; submit more often",
                        MAX_QUERIES / 2
                    )));
                }
                let i = prof.labels.len() as u32;
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &prof.query_set,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    }),
                });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                prof.labels.push(label);
            }
            None => {
                let pass = self.pass.get_or_insert_with(|| {
                    encoder
                        .begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some("qwm ops"),
                            timestamp_writes: None,
                        })
                        .forget_lifetime()
                });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            }
        }
        self.dispatches += 1;
        Ok(())
    }

    /// Record a buffer copy (ends the current pass).
    pub fn copy(&mut self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        self.pass = None;
        // `copy` takes `self` by `&mut` and the encoder only goes in `submit(self)`: it is here.
        #[allow(clippy::expect_used)]
        let encoder = self.encoder.as_mut().expect("recorder already submitted");
        encoder.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
    }

    /// Submit everything recorded so far. Does not wait.
    pub fn submit(mut self) -> Result<()> {
        self.pass = None;
        let enc = self
            .encoder
            .take()
            .ok_or_else(|| Error::Gpu("recorder already submitted".into()))?;
        self.ctx.queue.submit([enc.finish()]);
        self.ctx.check()
    }

    /// Submit, wait, and return the GPU time of each dispatch (empty without timestamps).
    pub fn submit_profiled(mut self) -> Result<Vec<KernelTime>> {
        self.pass = None;
        let mut enc = self
            .encoder
            .take()
            .ok_or_else(|| Error::Gpu("recorder already submitted".into()))?;
        let Some(prof) = self.profiler.take() else {
            self.ctx.queue.submit([enc.finish()]);
            self.ctx.wait()?;
            return Ok(Vec::new());
        };
        let n = prof.labels.len() as u32 * 2;
        if n == 0 {
            self.ctx.queue.submit([enc.finish()]);
            self.ctx.wait()?;
            return Ok(Vec::new());
        }
        let resolve = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qwm timestamps resolve"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qwm timestamps read"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(&prof.query_set, 0..n, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, n as u64 * 8);
        self.ctx.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("timestamp readback never completed".into()))?
            .map_err(|e| Error::Gpu(format!("timestamp readback failed: {e}")))?;
        let ticks: Vec<u64> = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading timestamps failed: {e}")))?;
            bytemuck::cast_slice(&view).to_vec()
        };
        staging.unmap();
        let period = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(prof
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| KernelTime {
                label: l.to_string(),
                seconds: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period,
            })
            .collect())
    }
}
