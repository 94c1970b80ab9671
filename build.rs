//! Build script: embeds the git commit (with a `-dirty` mark when tracked files differ from it)
//! and the build profile, so every `qwm bench` result names the code that produced it. A
//! source tree without git (a crates.io tarball, a copied folder) builds with "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// The variables are named QWMBUILD_*, not QWM_*: cargo also sets them when running tests,
// and QWM_* variables are recorded as overrides.
fn main() {
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit.is_some()
        && git(&["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.is_empty())
            .unwrap_or(false);
    let commit = match commit {
        Some(c) if dirty => format!("{c}-dirty"),
        Some(c) => c,
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=QWMBUILD_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=QWMBUILD_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into())
    );
    println!(
        "cargo:rustc-env=QWMBUILD_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
    // Re-run when the checked-out commit or the tracked sources change (the dirty mark).
    // In a worktree `.git` is a file, so ask git where HEAD and the index live.
    // A missing path would make cargo re-run this script on every build, so only existing
    // ones are named (a packed branch ref changes `packed-refs` instead).
    let mut watch = vec!["HEAD".to_string(), "index".into(), "packed-refs".into()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for p in &watch {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    for p in ["build.rs", "Cargo.toml", "src", "shaders"] {
        println!("cargo:rerun-if-changed={p}");
    }
}
