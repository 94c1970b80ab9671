//! GPU tensors and the buffer pool they come from.
//!
//! A dropped tensor returns its buffer to the pool, and the next tensor of the same byte size
//! reuses it, so a rollout that repeats the same shapes allocates nothing after its first step.
//!
//! When is reuse safe? A buffer dropped while recordings are open may still be used by their
//! not yet submitted dispatches. Reusing it later in the *same* thread's recording is fine
//! (commands run in recording order and the dropped contents are never read again), so such a
//! buffer goes to a `pending` list that only the recording thread may reuse, and only while no
//! other thread is recording. Once no recording is open, pending buffers become `free`: every
//! user has been submitted, so another thread's work and `queue.write_buffer` (which runs
//! before the next submission) can safely take them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use super::GpuContext;
use crate::{Error, Result};

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    pending: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Open recordings per thread.
    open: HashMap<ThreadId, usize>,
    live_bytes: u64,
    pooled_bytes: u64,
    peak_bytes: u64,
}

/// Buffers keyed by byte size. Tracks live and peak bytes for the memory benchmarks.
#[derive(Default, Clone)]
pub(crate) struct BufferPool {
    state: Arc<Mutex<PoolState>>,
}

impl BufferPool {
    pub(crate) fn open_recording(&self) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *st.open.entry(std::thread::current().id()).or_default() += 1;
    }

    pub(crate) fn close_recording(&self) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = std::thread::current().id();
        if let Some(n) = st.open.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                st.open.remove(&id);
            }
        }
        if st.open.is_empty() {
            let pending: Vec<(u64, Vec<wgpu::Buffer>)> = st.pending.drain().collect();
            for (bytes, v) in pending {
                st.free.entry(bytes).or_default().extend(v);
            }
        }
    }

    /// A pooled buffer or a new one. `for_queue_write`: the caller fills it with
    /// `queue.write_buffer`, so only buffers without pending users qualify.
    fn take(&self, device: &wgpu::Device, bytes: u64, for_queue_write: bool) -> PooledBuffer {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let me = std::thread::current().id();
        let only_recorder = st.open.len() == 1 && st.open.contains_key(&me);
        let mut reused = st.free.get_mut(&bytes).and_then(|v| v.pop());
        if reused.is_none() && only_recorder && !for_queue_write {
            reused = st.pending.get_mut(&bytes).and_then(|v| v.pop());
        }
        let buffer = match reused {
            Some(b) => {
                st.pooled_bytes -= bytes;
                b
            }
            None => device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qwm tensor"),
                size: bytes,
                usage: USAGE,
                mapped_at_creation: false,
            }),
        };
        st.live_bytes += bytes;
        st.peak_bytes = st.peak_bytes.max(st.live_bytes + st.pooled_bytes);
        PooledBuffer {
            buffer,
            bytes,
            pool: self.clone(),
        }
    }

    fn give_back(&self, buffer: wgpu::Buffer, bytes: u64) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.live_bytes -= bytes;
        st.pooled_bytes += bytes;
        let list = if st.open.is_empty() {
            &mut st.free
        } else {
            &mut st.pending
        };
        list.entry(bytes).or_default().push(buffer);
    }

    pub fn stats(&self) -> PoolStats {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        PoolStats {
            live_bytes: st.live_bytes,
            pooled_bytes: st.pooled_bytes,
            peak_bytes: st.peak_bytes,
        }
    }

    /// Free every idle buffer (live tensors are untouched).
    pub fn trim(&self) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut freed = 0;
        for (bytes, v) in st.free.drain() {
            freed += bytes * v.len() as u64;
            // Dropping releases the memory once no submitted work uses the buffer any more.
            drop(v);
        }
        st.pooled_bytes -= freed;
    }
}

/// Bytes held by GPU tensors: in use, idle in the pool, and the peak of their sum.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PoolStats {
    pub live_bytes: u64,
    pub pooled_bytes: u64,
    pub peak_bytes: u64,
}

pub(crate) struct PooledBuffer {
    pub buffer: wgpu::Buffer,
    bytes: u64,
    pool: BufferPool,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.give_back(self.buffer.clone(), self.bytes);
    }
}

/// A tensor of 32-bit elements (f32, or u32 for packed data) in GPU memory, row-major.
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor{:?}", self.shape)
    }
}

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }

    /// Same buffer, new shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(Error::Shape(format!(
                "cannot reshape {:?} ({} elements) to {:?} ({} elements)",
                self.shape,
                self.len(),
                shape,
                n
            )));
        }
        Ok(GpuTensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
        })
    }
}

impl GpuContext {
    /// An uninitialised tensor from the pool. Fails with the limit named if it cannot be bound.
    pub fn alloc(&self, shape: &[usize]) -> Result<GpuTensor> {
        let bytes = self.alloc_checked_size(shape)?;
        Ok(GpuTensor {
            buf: Arc::new(self.pool.take(&self.device, bytes, false)),
            shape: shape.to_vec(),
        })
    }

    /// Buffer bytes for a tensor of `shape`, checked against the binding limit.
    fn alloc_checked_size(&self, shape: &[usize]) -> Result<u64> {
        let n: usize = shape.iter().product();
        // wgpu rejects zero-sized bindings; keep at least one element of storage.
        let bytes = (n.max(1) as u64 * 4).div_ceil(16) * 16;
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::Limit(format!(
                "a tensor of shape {shape:?} needs {bytes} bytes but this adapter binds at most \
                 {limit} bytes per storage buffer (max_storage_buffer_binding_size); use a smaller \
                 batch or an adapter with a larger limit"
            )));
        }
        self.check()?;
        Ok(bytes)
    }

    /// Upload f32 data.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_raw(bytemuck::cast_slice(data), data.len(), shape)
    }

    /// Upload u32 data (packed codes).
    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_raw(bytemuck::cast_slice(data), data.len(), shape)
    }

    fn upload_raw(&self, bytes: &[u8], n: usize, shape: &[usize]) -> Result<GpuTensor> {
        let want: usize = shape.iter().product();
        if n != want {
            return Err(Error::Shape(format!(
                "upload of {n} elements into shape {shape:?} ({want} elements)"
            )));
        }
        // `queue.write_buffer` runs before the next submission, so the buffer must not have
        // users in a recording that is still open (see the module docs).
        let size = self.alloc_checked_size(shape)?;
        let t = GpuTensor {
            buf: Arc::new(self.pool.take(&self.device, size, true)),
            shape: shape.to_vec(),
        };
        if !bytes.is_empty() {
            self.queue.write_buffer(t.buffer(), 0, bytes);
        }
        Ok(t)
    }

    /// Read a tensor back as f32 (waits for all submitted work).
    pub fn read(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let raw = self.read_raw(t)?;
        Ok(bytemuck::cast_slice(&raw).to_vec())
    }

    /// Read a tensor back as u32.
    pub fn read_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        let raw = self.read_raw(t)?;
        Ok(bytemuck::cast_slice(&raw).to_vec())
    }

    fn read_raw(&self, t: &GpuTensor) -> Result<Vec<u8>> {
        self.check()?;
        let bytes = t.bytes();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qwm readback"),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the readback buffer failed: {e}")))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading the mapped buffer failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub fn trim_pool(&self) {
        self.pool.trim()
    }
}
