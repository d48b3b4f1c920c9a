//! Node id lists as people write them: `1-4,9,12-13`.

/// Runs of consecutive values in an ascending list: `[1, 2, 3, 9]` → `[(1, 3), (9, 9)]`.
pub fn runs<T: Copy + PartialEq + std::ops::Add<Output = T> + From<u8>>(
    values: &[T],
) -> Vec<(T, T)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + T::from(1) {
            j += 1;
        }
        out.push((values[i], values[j]));
        i = j + 1;
    }
    out
}

/// Writes ascending ids as ranges: `[1, 2, 3, 4, 9]` → `1-4,9`.
pub fn format_ids(ids: &[u32]) -> String {
    runs(ids)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads `1-4,9` into ascending, distinct ids.
pub fn parse_ids(list: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{part:?} is not a node id or a range like 3-7"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if lo == 0 || lo > hi {
            return Err(format!("{part:?}: ids start at 1 and ranges run upwards"));
        }
        if hi - lo >= 10_000_000 {
            return Err(format!("{part:?}: more than ten million ids"));
        }
        ids.extend(lo..=hi);
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err("no node ids given".to_owned());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_both_ways() {
        assert_eq!(
            parse_ids("1-4,9, 12-13,3").unwrap(),
            [1, 2, 3, 4, 9, 12, 13]
        );
        assert_eq!(format_ids(&[1, 2, 3, 4, 9, 12, 13]), "1-4,9,12-13");
        assert_eq!(format_ids(&parse_ids("7").unwrap()), "7");
        for bad in ["", "0", "5-2", "a", "1-x", "1-20000000"] {
            assert!(parse_ids(bad).is_err(), "{bad:?}");
        }
    }
}
