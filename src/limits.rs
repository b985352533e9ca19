//! Process limits a serving process raises at start: the soft limit of open files goes up to
//! the hard limit (systemd's default soft limit of 1,024 is far below what a server facing the
//! internet needs, and running out must never be what decides a health check).

/// Raises the soft limit of open files to the hard limit; returns (before, after).
#[cfg(target_os = "linux")]
pub fn raise_file_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// The current soft limit of open files (None if unknown).
#[cfg(target_os = "linux")]
pub fn file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass, nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

#[cfg(not(target_os = "linux"))]
pub fn file_limit() -> Option<u64> {
    None
}

#[cfg(not(target_os = "linux"))]
pub fn raise_file_limit() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let (before, after) = super::raise_file_limit().expect("rlimit");
        assert!(after >= before);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads into the struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
