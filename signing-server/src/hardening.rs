//! Process hardening applied before any secret is read: no core dumps, not
//! ptrace-attachable by other users' processes, memory locked where the
//! limits allow it (so passphrases and unlocked keys are not swapped out).
//! Also raises the open-files limit to its hard maximum.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What could be applied; the caller logs it.
#[derive(Debug, Default)]
pub struct Hardening {
    /// PR_SET_DUMPABLE 0 took effect.
    pub not_dumpable: bool,
    /// RLIMIT_CORE is 0.
    pub no_core: bool,
    /// mlockall(CURRENT|FUTURE) took effect.
    pub memory_locked: bool,
    /// The open-files limit now in force (raised to the hard limit).
    pub open_files: u64,
}

/// Applies what it can. Never fails: each measure is best effort and reported.
pub fn apply() -> Hardening {
    let mut h = Hardening {
        not_dumpable: prctl::set_dumpable(false).is_ok(),
        no_core: setrlimit(Resource::RLIMIT_CORE, 0, 0).is_ok(),
        ..Hardening::default()
    };
    // With a finite RLIMIT_MEMLOCK, MCL_FUTURE would make later allocations
    // fail once the limit is reached: lock memory only when it is unlimited.
    if matches!(getrlimit(Resource::RLIMIT_MEMLOCK), Ok((soft, _)) if soft == RLIM_INFINITY) {
        h.memory_locked = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).is_ok();
    }
    // Many build machines hold connections at once: the usual soft limit of
    // 1024 descriptors would refuse them long before the hard limit does.
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        h.open_files = soft;
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            h.open_files = hard;
        }
    }
    h
}
