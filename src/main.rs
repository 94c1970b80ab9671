#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use clap::Parser;

fn main() {
    keep_heap();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = qwm::cli::Cli::parse();
    if let Err(e) = qwm::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The CPU backend allocates and frees activation buffers of a few MB per op. glibc returns
/// them to the kernel (mmap above 128 KiB, heap trimming above 128 KiB), so every op paid
/// fresh page faults: a fifth of a CPU planning step. Keeping them in the heap removes that.
fn keep_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once, before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
