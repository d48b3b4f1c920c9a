//! Reading `key: N kB` files under /proc (`/proc/meminfo`, `/proc/<pid>/smaps_rollup`).

use std::path::Path;

/// The value of `key` in a `key: N kB` file, in bytes; 0 when missing.
pub fn kib_field(path: impl AsRef<Path>, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Readings from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemInfo {
    pub available: u64,
    pub slab: u64,
}

impl MemInfo {
    pub fn read() -> MemInfo {
        MemInfo {
            available: kib_field("/proc/meminfo", "MemAvailable"),
            slab: kib_field("/proc/meminfo", "Slab"),
        }
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn mem_available() -> u64 {
    kib_field("/proc/meminfo", "MemAvailable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_by_exact_key() {
        let path = std::env::temp_dir().join(format!("hostnet-procfs-{}", std::process::id()));
        std::fs::write(
            &path,
            "MemTotal:       24000000 kB\nMemAvailable:   1000 kB\nSlab:  8 kB\n",
        )
        .unwrap();
        assert_eq!(kib_field(&path, "MemAvailable"), 1000 * 1024);
        assert_eq!(kib_field(&path, "Slab"), 8 * 1024);
        assert_eq!(
            kib_field(&path, "Mem"),
            0,
            "a prefix of a key is not the key"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
