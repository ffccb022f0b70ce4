//! Peak resident memory of processes, from Linux's `/proc/<pid>/status` (through `procfs`).

/// A process's peak resident set size (`VmHWM`) in KiB, or `None` when it cannot be read (the process is gone,
/// runs elsewhere, or this is not Linux).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    process.status().ok()?.vmhwm
}

/// This process's own peak resident set size in KiB.
pub fn own_peak_rss_kib() -> Option<u64> {
    peak_rss_kib(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_peak() {
        assert!(own_peak_rss_kib().unwrap() > 0);
    }
}
