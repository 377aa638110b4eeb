//! Signals, in one place: a closed stdout ends the process quietly (SIGPIPE's default), SIGTERM (what
//! Slurm and Kubernetes send before a kill) sets a flag the library polls between batches (a second
//! one ends the process at once), and the
//! test build's checkpoint hooks (feature `test-hooks`) that abort or wait for a SIGTERM.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Set by SIGTERM: extraction stops after the batch in flight, with every finished batch in the
/// journal.
pub static TERMINATE: AtomicBool = AtomicBool::new(false);

/// When the first SIGTERM came (monotonic milliseconds).
static FIRST_MS: AtomicU64 = AtomicU64::new(0);

/// Monotonic milliseconds (`clock_gettime` is async-signal-safe).
fn now_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the current time into `t`, a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

extern "C" fn on_sigterm(_: libc::c_int) {
    // The first asks for a clean stop. A second, a second or more later (not the same signal
    // delivered twice by a wrapper), ends the process at once by the signal's default, for a stop
    // that cannot come (a call that never returns).
    // The first handler to set the time is the first signal (two at once on two threads: one
    // sets it, the other sees it just set); the flag comes after, so no handler sees the flag
    // without the time.
    let now = now_ms().max(1);
    let first = match FIRST_MS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => now,
        Err(t) => t,
    };
    TERMINATE.store(true, Ordering::SeqCst);
    if now.saturating_sub(first) >= 1000 {
        // SAFETY: `signal` and `raise` are async-signal-safe; each output file is renamed into
        // place whole, so none is left half-written.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::raise(libc::SIGTERM);
        }
    }
}

/// At start-up: a closed stdout (`headstart summary f.h5 | head -1`) ends the command with the status
/// of a process ended by SIGPIPE, as other Unix tools do (Rust ignores SIGPIPE, which made `println!`
/// panic). Sockets are not affected (Rust sends with MSG_NOSIGNAL), and every output file is renamed
/// into place whole, so a stop here leaves no half-written file.
pub fn default_sigpipe() {
    // SAFETY: restores a signal's default disposition before any thread is spawned.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Installs the SIGTERM handler and returns the flag it sets.
pub fn stop_on_sigterm() -> &'static AtomicBool {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    &TERMINATE
}

/// Name of the test hook's variable: `TASK:COUNT` (e.g. `extract:2`) aborts the process at that
/// checkpoint, as a crash would. Compiled only with the `test-hooks` feature, so it cannot fire in a
/// user's build.
#[cfg(feature = "test-hooks")]
pub const ABORT_AT_ENV: &str = "HEADSTART_TEST_ABORT_AT";

/// `TASK:N`: the binary waits at that checkpoint (up to 30 s) until a SIGTERM arrives, so a test
/// can send one mid-run. With [`READY_FILE_ENV`] set, it first creates that file, so the test sends
/// the signal once the binary waits (no fixed sleep).
#[cfg(feature = "test-hooks")]
pub const WAIT_AT_ENV: &str = "HEADSTART_TEST_WAIT_FOR_SIGTERM_AT";

/// A file the binary creates when it starts waiting at [`WAIT_AT_ENV`]'s checkpoint.
#[cfg(feature = "test-hooks")]
pub const READY_FILE_ENV: &str = "HEADSTART_TEST_READY_FILE";

/// `TASK:N`: the binary hangs at that checkpoint (up to 60 s) whatever comes, as a call that
/// never returns would, so a test can check that a second SIGTERM ends it. Writes
/// [`READY_FILE_ENV`] first, as [`WAIT_AT_ENV`] does.
#[cfg(feature = "test-hooks")]
pub const HANG_AT_ENV: &str = "HEADSTART_TEST_HANG_AT";

/// The checkpoint hook: called at every checkpoint the library reports.
#[cfg(feature = "test-hooks")]
pub fn test_hook(task: &str, count: usize) {
    let at = |name: &str| std::env::var(name).is_ok_and(|v| v == format!("{task}:{count}"));
    if at(ABORT_AT_ENV) {
        std::process::abort();
    }
    let hang = at(HANG_AT_ENV);
    if hang || at(WAIT_AT_ENV) {
        if let Some(f) = std::env::var_os(READY_FILE_ENV) {
            let _ = std::fs::write(f, b"waiting\n");
        }
        for _ in 0..if hang { 1200 } else { 600 } {
            if !hang && TERMINATE.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
pub fn test_hook(_: &str, _: usize) {}
